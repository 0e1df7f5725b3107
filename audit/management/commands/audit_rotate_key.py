"""`manage.py audit_rotate_key`: a new audit signing key; the rotation is recorded in the log
and the head that covers the record is signed by the previous key. If KMS_AUDIT_PUBLIC_KEYS
pins keys, add the new public key there (printed here) and keep the old one."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from audit.services import audit_signing_key_rotate
from kmsportal.crypto.audit_chain import public_key_from_pem
from kmsportal.crypto.audit_log import key_id


class Command(BaseCommand):
    help = "Rotate the audit signing key (recorded in the log, handed over by the old key)."

    def handle(self, *args: object, **options: object) -> None:
        row = audit_signing_key_rotate(actor=None)
        public = public_key_from_pem(row.public_key_pem)
        self.stdout.write(f"New audit signing key {key_id(public)}:")
        self.stdout.write(row.public_key_pem)
