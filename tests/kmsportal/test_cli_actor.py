"""Management commands are audited as cli:<os user>@<host>, optionally as a portal user."""

from __future__ import annotations

import getpass
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.roles import Role
from audit.services import audit_event_record
from kmsportal.cli_actor import (
    UnknownActorError,
    command_line_actor_for,
    command_line_actor_reset,
    command_line_actor_set,
    split_actor_option,
)

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = f"cli:{getpass.getuser()}@{socket.gethostname()}"


def test_actor_option_is_taken_out_of_the_command_line() -> None:
    assert split_actor_option(["manage.py", "--actor", "bob", "key_rotate", "k"]) == (
        ["manage.py", "key_rotate", "k"],
        "bob",
    )
    assert split_actor_option(["manage.py", "key_rotate", "k", "--actor=bob"]) == (
        ["manage.py", "key_rotate", "k"],
        "bob",
    )
    assert split_actor_option(["manage.py", "check"]) == (["manage.py", "check"], "")


def record_as(actor):
    token = command_line_actor_set(actor)
    try:
        return audit_event_record(action="client.created", details={"client": "x"})
    finally:
        command_line_actor_reset(token)


def test_cli_events_name_the_operating_system_user_and_host(db) -> None:
    event = record_as(command_line_actor_for())
    assert (event.actor_type, event.actor_id, event.actor_name) == ("system", "", ORIGIN)
    # Outside a command: the system, as before.
    assert audit_event_record(action="client.created").actor_name == "system"


def test_actor_option_names_the_portal_user_too(make_user) -> None:
    bob = make_user("bob", Role.KEY_CUSTODIAN)
    event = record_as(command_line_actor_for("bob"))
    assert (event.actor_type, event.actor_id) == ("user", str(bob.pk))
    assert event.actor_name == f"bob ({ORIGIN})"


def test_an_unknown_or_inactive_actor_is_refused(make_user) -> None:
    carol = make_user("carol", Role.AUDITOR)
    carol.is_active = False
    carol.save()
    for name in ("nobody", "carol"):
        with pytest.raises(UnknownActorError, match="no active portal user"):
            command_line_actor_for(name)


def test_manage_py_sets_the_actor_for_every_command() -> None:
    code = "from kmsportal.cli_actor import command_line_actor; print(command_line_actor().name)"
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == ORIGIN


def test_a_command_with_its_own_actor_option_reads_it_itself() -> None:
    """grant_create acts for the portal user its --actor names: manage.py leaves it alone."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "grant_create", "svc", "key", "--actor",
         "nobody", "--reason", "why"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    # The command parsed its --actor and went on to look the user up (this process's data
    # directory has no migrated database, so the lookup itself fails).
    assert "the following arguments are required" not in done.stderr
    assert "auth_user" in done.stderr or "no active portal user named 'nobody'" in done.stderr
