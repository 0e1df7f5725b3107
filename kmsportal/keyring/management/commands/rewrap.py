"""`manage.py rewrap [--batch N]`: re-seal all sealed data under the first master key."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsportal.keyring.services import (
    RewrapError,
    keyring_get,
    sealed_blob_counts,
    sealed_blobs_rewrap,
)


class Command(BaseCommand):
    help = (
        "Re-seal every sealed blob (key versions, CA keys, the audit signing key) under the "
        "first key of KMS_MASTER_KEYS. Resumable; safe to interrupt and run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=500, help="rows per transaction")

    def handle(self, *args: object, batch: int, **options: object) -> None:
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        primary = keyring_get().primary_key_id
        total = 0
        try:
            for progress in sealed_blobs_rewrap(batch_size=batch):
                total += progress.rewrapped
                if progress.rewrapped:
                    self.stdout.write(
                        f"{progress.field}: re-sealed {progress.rewrapped} of {progress.examined}"
                    )
        except RewrapError as exc:
            raise CommandError(
                f"stopped after re-sealing {total} blob(s): {exc}. Earlier batches are kept; "
                "fix or restore that row and run rewrap again."
            ) from exc
        counts = sealed_blob_counts()
        others = {key_id: n for key_id, n in counts.items() if key_id != primary}
        self.stdout.write(f"Re-sealed {total} blob(s); {counts.get(primary, 0)} under '{primary}'.")
        if others:
            raise CommandError(f"still sealed under other keys: {others}")
        self.stdout.write(
            f"Every sealed blob is under '{primary}'; other master key ids can now be removed "
            "from KMS_MASTER_KEYS."
        )
