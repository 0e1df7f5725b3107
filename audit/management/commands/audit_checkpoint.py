"""`manage.py audit_checkpoint [--wait]`: sign the chain head (idempotent; run it from cron).

With several nodes, run it from every node's crontab: one run at a time does the work
(kmsportal.locks); the others print "another node is running audit_checkpoint; nothing to
do" and exit 0. Skipped runs are logged, not audited (they would flood the log).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from audit.services import audit_checkpoint_create
from kmsportal.locks import add_wait_argument, exclusive_job, skipped_message

JOB = "audit_checkpoint"


class Command(BaseCommand):
    help = (
        "Sign a checkpoint of the audit chain at its current head, if it moved since the last one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        with exclusive_job(JOB, wait=bool(options["wait"])) as acquired:
            if not acquired:
                self.stdout.write(skipped_message(JOB))
                return
            checkpoint = audit_checkpoint_create()
        if checkpoint is None:
            self.stdout.write("No new audit events since the last checkpoint; nothing signed.")
        else:
            self.stdout.write(
                f"Signed checkpoint at event {checkpoint.sequence} (hash {checkpoint.hash})."
            )
