"""`manage.py destroy_due_keys`: for cron. Erases keys whose waiting period is over."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from vault.management import domain_errors
from vault.services import symmetric_keys_destroy_due


class Command(BaseCommand):
    help = (
        "Destroy (erase the material of) keys whose approved destruction waiting period is "
        "over. Idempotent."
    )

    def handle(self, *args: object, **options: object) -> None:
        with domain_errors():
            destroyed = symmetric_keys_destroy_due()
        if not destroyed:
            self.stdout.write("No keys due for destruction.")
        for name in destroyed:
            self.stdout.write(f"Destroyed key {name}: material erased, records and audit kept.")
