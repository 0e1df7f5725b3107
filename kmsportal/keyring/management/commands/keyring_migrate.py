"""`manage.py keyring_migrate --to pkcs11 [--batch N]`: move sealed data and CA keys from the
software keyring into the PKCS#11 token. Resumable and audited, like `rewrap`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsportal.crypto.pkcs11_token import TokenError
from kmsportal.keyring.backends import KeyBackendError
from kmsportal.keyring.services import (
    MigrateError,
    keyring_get,
    keyring_migrate_to_token,
    sealed_blob_counts,
)


class Command(BaseCommand):
    help = (
        "Move every sealed blob under the token's master key, give each key version a token "
        "wrapping key of its own and move CA keys into the token. Run with "
        "KMS_KEY_BACKEND=pkcs11 and KMS_MASTER_KEYS still set; resumable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", required=True, choices=["pkcs11"])
        parser.add_argument("--batch", type=int, default=200, help="rows per transaction")

    def handle(self, *args: object, to: str, batch: int, **options: object) -> None:
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        totals = {"resealed": 0, "wrapped": 0, "moved": 0}
        try:
            for progress in keyring_migrate_to_token(batch_size=batch):
                totals["resealed"] += progress.resealed
                totals["wrapped"] += progress.wrapped
                totals["moved"] += progress.moved_keys
                if progress.resealed:
                    self.stdout.write(
                        f"{progress.field}: moved {progress.resealed} of {progress.examined} "
                        f"({progress.wrapped} wrapping keys created, {progress.moved_keys} "
                        "private keys moved into the token)"
                    )
        except (MigrateError, KeyBackendError, TokenError) as exc:
            raise CommandError(
                f"stopped after {totals['resealed']} row(s): {exc}. Finished batches are kept; "
                "fix the problem and run keyring_migrate again."
            ) from exc
        primary = keyring_get().primary_key_id
        counts = sealed_blob_counts()
        others = {key_id: n for key_id, n in counts.items() if key_id != primary}
        self.stdout.write(
            f"Moved {totals['resealed']} row(s) into the token: {totals['wrapped']} wrapping "
            f"keys created, {totals['moved']} private keys moved; "
            f"{counts.get(primary, 0)} blob(s) under '{primary}'."
        )
        if others:
            raise CommandError(f"still sealed under other keys: {others}")
        self.stdout.write(
            "Nothing is sealed under the software keys any more: remove KMS_MASTER_KEYS and "
            "destroy it (until then, backups taken before this still open with it)."
        )
