"""`manage.py rotate_due_keys [--wait]`: for cron. Activates and rotates the keys that are due.

With several nodes, run it from every node's crontab: one run at a time does the work
(kmsportal.locks); the others print "another node is running rotate_due_keys; nothing to
do" and exit 0.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from kmsportal.locks import add_wait_argument, exclusive_job, skipped_message
from vault.management import domain_errors
from vault.services import symmetric_keys_rotate_due

JOB = "rotate_due_keys"


class Command(BaseCommand):
    help = (
        "Activate pre-active keys whose activation time has passed and rotate keys past "
        "their rotation period. Idempotent: safe to run every minute."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        with exclusive_job(JOB, wait=bool(options["wait"])) as acquired:
            if not acquired:
                self.stdout.write(skipped_message(JOB))
                return
            with domain_errors():
                done = symmetric_keys_rotate_due()
        if not done:
            self.stdout.write("No keys due.")
        for name, what in done:
            self.stdout.write(f"{name}: {what}")
