"""Who did something: a signed-in user, or the system (a cron job, a command without --actor).

Services take ``actor: Actor`` and record ``actor_name(actor)`` in audit events and requests.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser

__all__ = ["SYSTEM_ACTOR_NAME", "Actor", "actor_name"]

SYSTEM_ACTOR_NAME = "system"

Actor = AbstractBaseUser | None


def actor_name(actor: AbstractBaseUser | None) -> str:
    """The username an audit event names: the user's, or "system" without one."""
    return actor.get_username() if actor is not None else SYSTEM_ACTOR_NAME
