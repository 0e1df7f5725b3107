"""`manage.py key_rotate NAME [--min-decryption-version N]`."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from vault.management import key_by_name
from vault.services import symmetric_key_rotate


class Command(KMSCommand):
    help = "Give a key a fresh primary version; the previous one stays for decryption only."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--min-decryption-version",
            type=int,
            default=None,
            help="versions below this may no longer decrypt (only moves forward)",
        )

    def handle(
        self, *args: object, name: str, min_decryption_version: int | None, **options: object
    ) -> None:
        key = key_by_name(name)
        version = symmetric_key_rotate(
            actor=None, key=key, min_decryption_version=min_decryption_version
        )
        key.refresh_from_db(fields=["min_decryption_version"])
        self.stdout.write(
            f"Rotated {key.name} to version {version.number}, fingerprint "
            f"{version.fingerprint} (minimum decryption version {key.min_decryption_version})"
        )
