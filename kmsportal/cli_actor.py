"""Who runs a management command: ``cli:<os user>@<host>``, optionally as a portal user.

`manage.py` sets it once per command run (before the command starts); the audit recorder
consults it for every event whose service was given no actor, so a CLI action is recorded as
``cli:alice@kms1`` instead of ``system``. With ``manage.py --actor <username> ...`` the events
name that (active) portal user, followed by the CLI origin: ``bob (cli:alice@kms1)``.
Web requests never set it: a request's system actions stay ``system``.
"""

from __future__ import annotations

import contextvars
import getpass
import socket
from dataclasses import dataclass

from kmsportal.crypto.errors import KMSError

#: Commands that serve requests: their events come from requests, not from the operator.
SERVING_COMMANDS = frozenset({"runserver", "testserver"})


@dataclass(frozen=True)
class CommandLineActor:
    origin: str  # cli:<os user>@<host>
    user_id: str = ""
    username: str = ""

    @property
    def name(self) -> str:
        return f"{self.username} ({self.origin})" if self.username else self.origin


_current: contextvars.ContextVar[CommandLineActor | None] = contextvars.ContextVar(
    "kmsportal_cli_actor", default=None
)


def command_line_origin() -> str:
    """``cli:<os user>@<host>`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (containers)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname() or 'localhost'}"


def command_line_actor() -> CommandLineActor | None:
    """The actor of the running management command, or None outside one."""
    return _current.get()


def command_line_actor_set(
    actor: CommandLineActor | None,
) -> contextvars.Token[CommandLineActor | None]:
    return _current.set(actor)


def command_line_actor_reset(token: contextvars.Token[CommandLineActor | None]) -> None:
    _current.reset(token)


class UnknownActorError(KMSError):
    """``--actor`` names no active portal user."""

    code = "unknown_actor"
    status = 400


def command_line_actor_for(username: str = "") -> CommandLineActor:
    """The actor of this process, as the portal user ``username`` if given (must be active)."""
    origin = command_line_origin()
    if not username:
        return CommandLineActor(origin=origin)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise UnknownActorError(f"--actor {username}: no active portal user has that name")
    return CommandLineActor(origin=origin, user_id=str(user.pk), username=user.get_username())


def split_actor_option(argv: list[str]) -> tuple[list[str], str]:
    """Remove ``--actor NAME`` / ``--actor=NAME`` (before or after the command) from argv."""
    rest: list[str] = []
    username = ""
    items = iter(argv)
    for item in items:
        if item == "--actor":
            username = next(items, "")
        elif item.startswith("--actor="):
            username = item.partition("=")[2]
        else:
            rest.append(item)
    return rest, username


def command_declares_actor(command: str) -> bool:
    """Whether management command ``command`` has an ``--actor`` option of its own (then it,
    not manage.py, reads it). Needs django.setup()."""
    from django.core.management import get_commands, load_command_class

    app = get_commands().get(command)
    if not command or app is None:
        return False
    parser = load_command_class(app, command).create_parser("manage.py", command)
    return any("--actor" in action.option_strings for action in parser._actions)
