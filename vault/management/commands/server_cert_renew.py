"""`manage.py server_cert_renew`: issue a fresh kms-server certificate for the key server."""

from __future__ import annotations

from kmsportal.commands import KMSCommand
from vault.server_identity import server_identity_renew


class Command(KMSCommand):
    help = "Issue a new kms-server certificate (new sealed key) from the client identity CA."

    def handle(self, *args: object, **options: object) -> None:
        identity = server_identity_renew()
        certificate = identity.certificate
        self.stdout.write(
            f"Issued kms-server certificate {certificate.serial_hex}, valid until "
            f"{certificate.not_after:%Y-%m-%d}."
        )
