"""`manage.py ca_import NAME --certificate ca.pem --key key.pem [--password-file F]` or
`manage.py ca_import NAME --pkcs12 ca.p12 [--password-file F]`: bring an existing CA into the
configured key backend (pkcs11: the key becomes a non-extractable token object)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import KMSCommand
from pki.ca_import import certificate_authority_import

_MAX_FILE = 1 << 20


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise CommandError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > _MAX_FILE:
        raise CommandError(f"the {what} {path} is larger than 1 MiB")
    return data


class Command(KMSCommand):
    help = (
        "Import an existing CA (certificate + PKCS#8 key, or PKCS#12) with the checks ca_create "
        "makes: key matches, CA:TRUE, valid now, self-signed or issued by a CA here."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="lower-case letters, digits and '-'; used in URLs")
        parser.add_argument("--certificate", help="the CA certificate (PEM or DER)")
        parser.add_argument("--key", help="its private key (PKCS#8 PEM or DER, may be encrypted)")
        parser.add_argument("--pkcs12", help="certificate and key in one PKCS#12 file")
        parser.add_argument("--password-file", help="file holding the key's or PKCS#12 password")

    def handle(
        self,
        *args: object,
        name: str,
        certificate: str | None,
        key: str | None,
        pkcs12: str | None,
        password_file: str | None,
        **options: object,
    ) -> None:
        password = _read(password_file, "password file")
        ca = certificate_authority_import(
            actor=None,
            name=name,
            certificate=_read(certificate, "certificate"),
            private_key=_read(key, "private key"),
            pkcs12=_read(pkcs12, "PKCS#12 file"),
            password=password.rstrip(b"\r\n") if password else None,
        )
        kind = "intermediate under " + ca.parent.name if ca.parent else "root"
        self.stdout.write(
            f"Imported CA {ca.name} ({kind}, {ca.key_type}): {ca.subject}, valid until "
            f"{ca.not_after:%Y-%m-%d}, SHA-256 {ca.fingerprint_sha256}"
        )
