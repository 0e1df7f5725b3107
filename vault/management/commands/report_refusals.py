"""`manage.py report_refusals`: for cron (every minute or few). Writes one
`api.requests_refused` audit event per source address and finished minute of client API
refusals that no verified client can be held to (counted, not audited one by one; see
docs/server-identity.md). The API does this itself at the next such refusal; this command
covers a flood that stopped. Safe on every node at once: each tally is claimed under a lock.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from vault.refusals import refusal_tallies_report


class Command(BaseCommand):
    help = "Audit the per-address counts of unattributable client API refusals (finished minutes)."

    def handle(self, *args: object, **options: object) -> None:
        reported = refusal_tallies_report()
        self.stdout.write(f"Reported {reported} address-minute(s) of refused API requests.")
