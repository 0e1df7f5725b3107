"""`manage.py bootstrap`: make a fresh deployment usable. Idempotent.

- Without KMS_MASTER_KEYS (DEBUG only) writes a development keyring to <data dir>/master.keys
  (mode 0600) and warns that production must set the variable.
- Records the key check value of every configured master key id.
- Creates the first administrator with a random password printed once; when an
  administrator exists it creates nothing and says so.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from accounts import services
from accounts.roles import Role
from audit.services import audit_signing_key_ensure
from kmsportal.checks import check_master_keyring
from kmsportal.commands import KMSCommand
from kmsportal.crypto.kek import generate_dev_keyring_spec, write_keyring_file
from kmsportal.keyring.backends import key_backend
from kmsportal.keyring.services import keyring_reset, master_key_records_sync


class Command(KMSCommand):
    help = "Prepare a fresh deployment: master keyring check values and the first administrator."
    # The keyring check runs below, after a development keyring has been written if needed.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="first administrator's name")
        parser.add_argument("--email", default="", help="first administrator's email")

    def handle(self, *args: object, username: str, email: str, **options: object) -> None:
        self._keyring()
        self._audit_signing_key()
        self._distribution()
        self._first_administrator(username=username, email=email)

    def _keyring(self) -> None:
        backend = key_backend()
        if backend.name != "software":
            # pkcs11: the token's master key seals; create it on a fresh token.
            done = backend.prepare()
            for line in done:
                self.stdout.write(line[0].upper() + line[1:] + ".")
            self.stdout.write(f"Master keyring: {backend!r}.")
        elif settings.KMS_MASTER_KEYS.strip():
            self.stdout.write("Master keyring: from KMS_MASTER_KEYS.")
        elif not settings.DEBUG:
            raise CommandError(
                "KMS_MASTER_KEYS is not set. Production (DEBUG=False) must provide the master "
                "keyring in the environment; see .env.example."
            )
        else:
            path = settings.KMS_MASTER_KEYS_FILE
            if path.exists():
                self.stdout.write(f"Master keyring: development file {path}.")
            else:
                write_keyring_file(path, generate_dev_keyring_spec())
                self.stdout.write(
                    self.style.WARNING(
                        f"WARNING: wrote a DEVELOPMENT master keyring to {path} (mode 0600).\n"
                        "         Anyone who can read that file can unseal every key.\n"
                        "         Production must set KMS_MASTER_KEYS in the environment "
                        "(and keep it out of the data directory and out of backups of it)."
                    )
                )
        keyring_reset()
        problems = [m for m in check_master_keyring() if m.is_serious()]
        if problems:
            raise CommandError("\n".join(f"{m.id}: {m.msg} ({m.hint})" for m in problems))
        for key_id in master_key_records_sync():
            self.stdout.write(f"Recorded the key check value of master key '{key_id}'.")

    def _audit_signing_key(self) -> None:
        key, created = audit_signing_key_ensure()
        if created:
            self.stdout.write("Created the audit signing key (Ed25519, sealed). Its public key:")
            self.stdout.write(key.public_key_pem.strip())

    def _distribution(self) -> None:
        from vault.server_identity import distribution_bootstrap, root_ca, server_identity_pin

        for line in distribution_bootstrap():
            self.stdout.write(line[0].upper() + line[1:] + ".")
        root = root_ca()
        if root is None:  # distribution_bootstrap() has just made it
            raise CommandError("the identity root CA is missing after bootstrap")
        self.stdout.write(
            f"Clients pin the root CA certificate: {settings.KMS_PUBLIC_URL}/pki/ca/{root.name}.crt"
            f" (SHA-256 {root.fingerprint_sha256})"
        )
        pin = server_identity_pin()
        if pin is not None:
            # What `kmsclient enroll` pins by itself; clients enrolled before server-identity
            # pinning take these two values with `kmsclient pin-server`.
            self.stdout.write(
                f"Server identity (pinned by clients at enrollment): deployment {pin.deployment},"
                f" server-identity CA key SHA-256 {pin.ca_spki_sha256}\n"
                "  Clients enrolled earlier: kmsclient pin-server "
                f"--server-ca-spki {pin.ca_spki_sha256} --deployment {pin.deployment}"
            )
        from portal.public_url import stale_certificate_addresses

        for warning in stale_certificate_addresses():  # KMS_PUBLIC_URL changed since
            self.stdout.write(self.style.WARNING(f"WARNING: {warning}"))

    def _first_administrator(self, *, username: str, email: str) -> None:
        with transaction.atomic():
            existing = list(
                User.objects.filter(groups__name=Role.ADMINISTRATOR, is_active=True)
                .order_by("pk")
                .values_list("username", flat=True)
            )
            if existing:
                self.stdout.write(
                    f"An administrator already exists ({', '.join(existing)}); no user was created."
                )
                return
            user, password = services.user_bootstrap_administrator(username=username, email=email)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the first administrator.\n"
                f"  Sign in at {settings.KMS_PUBLIC_URL}/ as: {user.username}\n"
                f"  Password (shown once, not stored in clear): {password}\n"
                "  The first sign-in asks you to enrol an authenticator app (TOTP) on your phone."
            )
        )
