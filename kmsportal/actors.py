"""Who did something: a signed-in user, or the system (a cron job, a command without --actor).

Services take ``actor: Actor`` and record ``actor_name(actor)`` in audit events and requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from django.contrib.auth.models import User

__all__ = ["SYSTEM_ACTOR_NAME", "Actor", "actor_name"]

SYSTEM_ACTOR_NAME = "system"

#: The portal's users are django.contrib.auth User rows (AUTH_USER_MODEL is not swapped).
Actor: TypeAlias = "User | None"


def actor_name(actor: Actor) -> str:
    """The username an audit event names: the user's, or "system" without one."""
    return actor.get_username() if actor is not None else SYSTEM_ACTOR_NAME
