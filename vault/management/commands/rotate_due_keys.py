"""`manage.py rotate_due_keys [--wait]`: for cron. Activates and rotates the keys that are due.

With several nodes, run it from every node's crontab: one run at a time does the work
(kmsportal.locks); the others print "another node is running rotate_due_keys; nothing to
do" and exit 0.
"""

from __future__ import annotations

from typing import Any

from kmsportal.commands import ScheduledCommand
from vault.services import symmetric_keys_rotate_due


class Command(ScheduledCommand):
    job = "rotate_due_keys"
    help = (
        "Activate pre-active keys whose activation time has passed and rotate keys past "
        "their rotation period. Idempotent: safe to run every minute."
    )

    def run(self, **options: Any) -> list[tuple[str, str]]:
        return symmetric_keys_rotate_due()

    def report(self, done: list[tuple[str, str]]) -> None:
        if not done:
            self.stdout.write("No keys due.")
        for name, what in done:
            self.stdout.write(f"{name}: {what}")
