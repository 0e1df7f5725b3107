"""`manage.py reissue_public_urls [--dry-run]`: after `KMS_PUBLIC_URL` changed, re-issue what
names the old address.

- every active intermediate CA whose certificate points its CRL/AIA/OCSP at another address:
  re-issued by its parent with the same key, subject and validity (event `ca.reissued`);
- the key server's own certificate (`server_cert_renew`), when it names another address.

The root CA carries no address and is never re-issued: clients keep the root they pinned.
End-entity certificates (services' TLS certificates, clients' `kms-client` certificates) keep
the addresses they were issued with; renew them (clients: a new enrollment token and
`kmsclient enroll`) when relying parties must follow the new address. Idempotent: a second
run finds nothing to do. Audited as the operator who runs it (cli:<user>@<host>).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from pki.public_urls import (
    certificate_authorities_with_stale_addresses,
    certificate_authority_reissue,
)
from portal.public_url import server_certificate_stale


class Command(KMSCommand):
    help = "Re-issue the CA and key-server certificates that name an old KMS_PUBLIC_URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be re-issued; change nothing"
        )

    def handle(self, *args: object, dry_run: bool = False, **options: object) -> None:
        self.stdout.write(f"Public URL: {settings.KMS_PUBLIC_URL}")
        stale_cas = certificate_authorities_with_stale_addresses()
        server = server_certificate_stale()
        if not stale_cas and server is None:
            self.stdout.write("Every CA and the key server certificate name this URL already.")
            return
        for ca, problem in stale_cas:
            old = ", ".join(problem.found) or "no address"
            if dry_run:
                self.stdout.write(f"Would re-issue CA {ca.name} (now: {old}).")
                continue
            reissued = certificate_authority_reissue(actor=None, ca=ca)
            self.stdout.write(
                f"Re-issued CA {reissued.name}: serial {reissued.serial_number_display}, "
                f"SHA-256 {reissued.fingerprint_sha256} (was: {old})."
            )
        if server is not None:
            if dry_run:
                self.stdout.write(f"Would renew the {server.what}.")
            else:
                from vault.server_identity import server_identity_renew

                identity = server_identity_renew()
                self.stdout.write(
                    f"Renewed the key server certificate: serial {identity.certificate.serial_hex}."
                )
        if not dry_run:
            self.stdout.write(
                "Clients keep their pinned root. Certificates issued earlier keep the old "
                "addresses until renewed (clients: new enrollment token, `kmsclient enroll`)."
            )
