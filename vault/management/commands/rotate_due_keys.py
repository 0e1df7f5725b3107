"""`manage.py rotate_due_keys`: for cron. Activates and rotates the keys that are due."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from vault.management import domain_errors
from vault.services import symmetric_keys_rotate_due


class Command(BaseCommand):
    help = (
        "Activate pre-active keys whose activation time has passed and rotate keys past "
        "their rotation period. Idempotent: safe to run every minute."
    )

    def handle(self, *args: object, **options: object) -> None:
        with domain_errors():
            done = symmetric_keys_rotate_due()
        if not done:
            self.stdout.write("No keys due.")
        for name, what in done:
            self.stdout.write(f"{name}: {what}")
