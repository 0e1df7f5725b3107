"""`manage.py destroy_due_keys [--wait]`: for cron. Erases keys whose waiting period is over.

With several nodes, run it from every node's crontab: one run at a time does the work
(kmsportal.locks); the others print "another node is running destroy_due_keys; nothing to
do" and exit 0.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from kmsportal.locks import add_wait_argument, exclusive_job, skipped_message
from vault.management import domain_errors
from vault.services import symmetric_keys_destroy_due

JOB = "destroy_due_keys"


class Command(BaseCommand):
    help = (
        "Destroy (erase the material of) keys whose approved destruction waiting period is "
        "over. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        with exclusive_job(JOB, wait=bool(options["wait"])) as acquired:
            if not acquired:
                self.stdout.write(skipped_message(JOB))
                return
            with domain_errors():
                destroyed = symmetric_keys_destroy_due()
        if not destroyed:
            self.stdout.write("No keys due for destruction.")
        for name in destroyed:
            self.stdout.write(f"Destroyed key {name}: material erased, records and audit kept.")
