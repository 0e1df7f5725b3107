"""`manage.py key_list [--state S]`: one line per key."""

from __future__ import annotations

from datetime import UTC

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Prefetch

from vault.lifecycle import KeyState
from vault.models import KeyVersion, SymmetricKey

COLUMNS = ("NAME", "STATE", "PRIMARY", "FINGERPRINT", "NEXT ROTATION", "")


def _state(text: str) -> KeyState:
    normalised = text.strip().lower().replace("-", "_").replace(" ", "_")
    if normalised in KeyState.values:
        return KeyState(normalised)
    choices = ", ".join(KeyState.values)
    raise CommandError(f"unknown state {text!r}; choose from {choices}")


class Command(BaseCommand):
    help = "List keys with their state, primary version and next rotation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--state", default="", help=", ".join(KeyState.values))

    def handle(self, *args: object, state: str, **options: object) -> None:
        keys = SymmetricKey.objects.order_by("name").prefetch_related(
            Prefetch(
                "versions",
                queryset=KeyVersion.objects.filter(is_primary=True).defer("sealed_material"),
                to_attr="primary_versions",
            )
        )
        if state:
            keys = keys.filter(state=_state(state))
        rows = []
        for key in keys.iterator(chunk_size=500):
            primary = key.primary_versions[0] if key.primary_versions else None
            rows.append(
                (
                    key.name,
                    key.get_state_display(),
                    str(primary.number) if primary else "-",
                    primary.fingerprint if primary else "-",
                    f"{key.next_rotation_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                    if key.next_rotation_at
                    else "-",
                    "OVERDUE" if key.rotation_overdue else "",
                )
            )
        if not rows:
            self.stdout.write("No keys.")
            return
        widths = [max(len(row[i]) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
        for row in (COLUMNS, *rows):
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
