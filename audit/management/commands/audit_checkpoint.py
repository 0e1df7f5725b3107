"""`manage.py audit_checkpoint`: sign the chain head (idempotent; run it from cron)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from audit.services import audit_checkpoint_create


class Command(BaseCommand):
    help = (
        "Sign a checkpoint of the audit chain at its current head, if it moved since the last one."
    )

    def handle(self, *args: object, **options: object) -> None:
        checkpoint = audit_checkpoint_create()
        if checkpoint is None:
            self.stdout.write("No new audit events since the last checkpoint; nothing signed.")
        else:
            self.stdout.write(
                f"Signed checkpoint at event {checkpoint.sequence} (hash {checkpoint.hash})."
            )
