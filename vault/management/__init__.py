"""Management commands of the vault, and what they share: lookups and parsing.

Every command is thin: parse, call one service, print. Anything the domain refuses (a
`KMSError`, an unknown key, a malformed time) becomes a `CommandError` carrying the domain
message: one line, exit status 1, no traceback (the commands are
`kmsportal.commands.KMSCommand`s).
"""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import CommandError

from vault.models import Client, SymmetricKey


def key_by_name(name: str) -> SymmetricKey:
    """The key called `name`, or a CommandError saying there is none."""
    key = SymmetricKey.objects.filter(name=name).first()
    if key is None:
        raise CommandError(f"no key named {name!r}")
    return key


def client_by_name(name: str) -> Client:
    """The client service called `name`, or a CommandError saying there is none."""
    client = Client.objects.filter(name=name).first()
    if client is None:
        raise CommandError(f"no client named {name!r}")
    return client


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time such as 2030-01-31T12:00:00Z (the zone is checked by the service)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"{option}: {text!r} is not an ISO 8601 time (for example 2030-01-31T12:00:00Z)"
        ) from None
