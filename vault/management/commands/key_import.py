"""`manage.py key_import KEY --wrapped FILE --token-file DIR/import-token`: bring your own
key, step 2. Prints the new version's fingerprint (the key check value key_create prints)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import KMSCommand
from vault.key_import import WRAPPED_MAX_BYTES, key_import


def _read(path: str, what: str, limit: int) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise CommandError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise CommandError(f"the {what} {path} is larger than {limit} bytes")
    return data


class Command(KMSCommand):
    help = "Import wrapped AES-256 material (RSA_AES_KEY_WRAP_SHA_256) into KEY."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")
        parser.add_argument("--wrapped", required=True, help="the wrapped key material")
        parser.add_argument("--token-file", required=True, help="the import-token file")

    def handle(
        self, *args: object, key: str, wrapped: str, token_file: str, **options: object
    ) -> None:
        blob = _read(wrapped, "wrapped key file", WRAPPED_MAX_BYTES)
        token = _read(token_file, "import token file", 200).decode("ascii", "replace").strip()
        version = key_import(actor=None, key_name=key, wrapped=blob, import_token=token)
        self.stdout.write(
            f"Imported key {key}, version {version.number} (origin external), "
            f"fingerprint {version.fingerprint}"
        )
