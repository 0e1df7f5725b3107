"""`manage.py ca_create NAME --subject "CN=…,O=…" [--parent NAME] [--key-type rsa3072]
[--days N] [--path-length N]`."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from pki.management import ca_by_name
from pki.models import KEY_TYPE_CHOICES
from pki.services import certificate_authority_create


class Command(KMSCommand):
    help = (
        "Create a certificate authority: a self-signed root, or with --parent an intermediate "
        "signed by that CA. The private key is generated here and stored only sealed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="lower-case letters, digits and '-'; used in URLs")
        parser.add_argument(
            "--subject", required=True, help='e.g. "CN=Example Root CA,O=Example Org,C=DE"'
        )
        parser.add_argument("--parent", default=None, help="name of the signing CA")
        parser.add_argument(
            "--key-type",
            default="rsa3072",
            choices=[value for value, _ in KEY_TYPE_CHOICES],
            help="default rsa3072",
        )
        parser.add_argument(
            "--days", type=int, default=None, help="default 3650 (root), 1825 (intermediate)"
        )
        parser.add_argument(
            "--path-length",
            type=int,
            default=None,
            help="intermediate CAs allowed below; default no limit (root), 0 (intermediate)",
        )

    def handle(
        self,
        *args: object,
        name: str,
        subject: str,
        parent: str | None,
        key_type: str,
        days: int | None,
        path_length: int | None,
        **options: object,
    ) -> None:
        parent_ca = ca_by_name(parent, "--parent") if parent else None
        ca = certificate_authority_create(
            actor=None,
            name=name,
            subject=subject,
            parent=parent_ca,
            key_type=key_type,
            days=days,
            path_length=path_length,
        )
        kind = f"intermediate under {parent_ca.name}" if parent_ca else "root"
        limit = "no limit" if ca.path_length is None else str(ca.path_length)
        self.stdout.write(
            f"Created CA {ca.name} ({kind}): {ca.subject}, {ca.get_key_type_display()}, "
            f"serial {ca.serial_number_display}, valid until {ca.not_after:%Y-%m-%d %H:%M} UTC, "
            f"path length {limit}\nSHA-256 fingerprint {ca.fingerprint_sha256_display}"
        )
