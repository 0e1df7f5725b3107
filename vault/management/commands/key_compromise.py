"""`manage.py key_compromise NAME [--version N] --reason TEXT [--at ISO8601]`."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from vault.lifecycle import VersionState
from vault.management import key_by_name, parse_time
from vault.services import key_version_compromise, symmetric_key_compromise


class Command(KMSCommand):
    help = (
        "Report one version (--version) or the whole key compromised. Cannot be undone; a "
        "compromised primary version is replaced by a fresh one at once."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: object) -> CommandParser:
        # Our --version (a key version number) replaces Django's --version (its own).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--version", type=int, default=None, dest="number", help="one version number"
        )
        parser.add_argument("--reason", required=True)
        parser.add_argument("--at", default=None, help="when it happened (ISO 8601, with zone)")

    def handle(
        self,
        *args: object,
        name: str,
        number: int | None,
        reason: str,
        at: str | None,
        **options: object,
    ) -> None:
        when = parse_time(at, "--at")
        key = key_by_name(name)
        if number is None:
            key = symmetric_key_compromise(actor=None, key=key, reason=reason, compromised_at=when)
            numbers = key.versions.filter(
                state=VersionState.COMPROMISED, compromised_at=key.compromised_at
            ).values_list("number", flat=True)
            assert key.compromised_at is not None  # the service has just set it
            listed = ", ".join(str(n) for n in sorted(numbers)) or "none"
            self.stdout.write(
                f"Key {key.name} reported compromised at {key.compromised_at.isoformat()} "
                f"(versions: {listed}); it can only be destroyed now."
            )
            return
        replacement = key_version_compromise(
            actor=None, key=key, number=number, reason=reason, compromised_at=when
        )
        line = f"Version {number} of {key.name} reported compromised"
        if replacement is not None:
            line += (
                f"; version {replacement.number} (fingerprint {replacement.fingerprint}) "
                "is the new primary"
            )
        self.stdout.write(line + ".")
