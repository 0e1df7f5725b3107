"""`manage.py notify_expiring [--wait]`: send today's expiry digests (see
``notifications.services``). Cron-safe: run it hourly or daily from every node; one run at a
time does the work, a second run the same day sends nothing new."""

from __future__ import annotations

from typing import Any

from kmsportal.commands import ScheduledCommand
from notifications.services import NotifyResult, notify_expiring


class Command(ScheduledCommand):
    job = "notify_expiring"
    help = "Email (and optionally POST to a webhook) what expires soon or is due for rotation."

    def run(self, **options: Any) -> NotifyResult:
        return notify_expiring()

    def report(self, done: NotifyResult) -> None:
        self.stdout.write(
            f"sent {done.digests} digest(s) with {done.items} item(s); "
            f"{done.webhook_items} item(s) to the webhook; "
            f"{done.skipped_recipients} recipient(s) already had today's digest"
        )
