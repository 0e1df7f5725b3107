"""`manage.py key_create NAME [--type T] [--rotation-days N] [--description D]
[--activate-at ISO8601] [--require-context NAME ...] [--allow-compromised-decrypt]`."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from kmsportal.crypto.operations import KEY_TYPES
from vault.management import parse_time
from vault.services import symmetric_key_create


class Command(KMSCommand):
    help = "Create a key (version 1), active now or pre-active until --activate-at."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--type", dest="key_type", choices=KEY_TYPES, default="aes-256-gcm", help="key type"
        )
        parser.add_argument(
            "--require-context",
            action="append",
            default=[],
            metavar="NAME",
            help="an encryption-context name every encrypt/decrypt must carry (repeatable)",
        )
        parser.add_argument(
            "--allow-compromised-decrypt",
            action="store_true",
            help="let versions reported compromised still decrypt (audited)",
        )
        parser.add_argument("--rotation-days", type=int, default=None, help="1-3650 days")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--activate-at", default=None, help="ISO 8601 time with zone, e.g. 2030-01-31T12:00Z"
        )

    def handle(
        self,
        *args: object,
        name: str,
        rotation_days: int | None,
        description: str,
        activate_at: str | None,
        key_type: str,
        require_context: list[str],
        allow_compromised_decrypt: bool,
        **options: object,
    ) -> None:
        when = parse_time(activate_at, "--activate-at")
        key = symmetric_key_create(
            actor=None,
            name=name,
            description=description,
            rotation_period_days=rotation_days,
            activate_at=when,
            key_type=key_type,
            required_context_keys=require_context,
            allow_compromised_decrypt=allow_compromised_decrypt,
        )
        version = key.versions.get(number=1)
        state = key.get_state_display()
        if key.activate_at is not None:
            state = f"{state} until {key.activate_at.isoformat()}"
        self.stdout.write(
            f"Created key {key.name} ({key.algorithm}), version 1, "
            f"fingerprint {version.fingerprint}, state {state}"
        )
