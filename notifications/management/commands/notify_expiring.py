"""`manage.py notify_expiring [--wait]`: send today's expiry digests (see
``notifications.services``). Cron-safe: run it hourly or daily from every node; one run at a
time does the work, a second run the same day sends nothing new."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from kmsportal.locks import add_wait_argument, exclusive_job, skipped_message
from notifications.services import notify_expiring

JOB = "notify_expiring"


class Command(BaseCommand):
    help = "Email (and optionally POST to a webhook) what expires soon or is due for rotation."

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        with exclusive_job(JOB, wait=bool(options["wait"])) as acquired:
            if not acquired:
                self.stdout.write(skipped_message(JOB))
                return
            result = notify_expiring()
        self.stdout.write(
            f"sent {result.digests} digest(s) with {result.items} item(s); "
            f"{result.webhook_items} item(s) to the webhook; "
            f"{result.skipped_recipients} recipient(s) already had today's digest"
        )
