"""`manage.py destroy_due_keys [--wait]`: for cron. Erases keys whose waiting period is over.

With several nodes, run it from every node's crontab: one run at a time does the work
(kmsportal.locks); the others print "another node is running destroy_due_keys; nothing to
do" and exit 0.
"""

from __future__ import annotations

from typing import Any

from kmsportal.commands import ScheduledCommand
from vault.services import symmetric_keys_destroy_due


class Command(ScheduledCommand):
    job = "destroy_due_keys"
    help = (
        "Destroy (erase the material of) keys whose approved destruction waiting period is "
        "over. Idempotent."
    )

    def run(self, **options: Any) -> list[str]:
        return symmetric_keys_destroy_due()

    def report(self, done: list[str]) -> None:
        if not done:
            self.stdout.write("No keys due for destruction.")
        for name in done:
            self.stdout.write(f"Destroyed key {name}: material erased, records and audit kept.")
