"""The vault's management commands against the real database: output and refusals."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from tests.key_backends import BOTH_BACKENDS
from vault import services
from vault.lifecycle import KeyState, VersionState
from vault.models import KeyVersion, SymmetricKey

from .conftest import make_due, schedule_destruction

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def state_of_everything() -> tuple:
    """Keys, versions and the audit log: what a refused command must leave as it was."""
    return (
        list(SymmetricKey.objects.order_by("name").values()),
        list(KeyVersion.objects.order_by("pk").values_list("pk", "state", "is_primary")),
        AuditEvent.objects.count(),
    )


def refused(args: list[str], message: str) -> None:
    before = state_of_everything()
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).strip()
    assert state_of_everything() == before


# --- key_create -------------------------------------------------------------------------


def test_key_create(db) -> None:
    out = run("key_create", "orders-db", "--rotation-days", "90", "--description", "Orders")
    key = SymmetricKey.objects.get(name="orders-db")
    fingerprint = key.versions.get().fingerprint
    assert re.fullmatch(r"[0-9A-F]{6}", fingerprint)
    assert out == (
        f"Created key orders-db (AES-256-GCM), version 1, fingerprint {fingerprint}, state active\n"
    )
    assert (key.state, key.rotation_period_days, key.description) == ("active", 90, "Orders")
    assert key.created_by_name == "system"
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_type) == ("key.created", "system")


def test_key_create_pre_active(db) -> None:
    out = run("key_create", "billing", "--activate-at", "2999-01-31T12:00:00Z")
    assert out.endswith("state pre-active until 2999-01-31T12:00:00+00:00\n")
    key = SymmetricKey.objects.get(name="billing")
    assert key.state == KeyState.PRE_ACTIVE
    assert key.versions.get().state == VersionState.PRE_ACTIVE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Orders DB"], "name: Use 1-100 lowercase letters, digits"),
        (["bad-"], "name: Use 1-100 lowercase letters, digits"),
        (["x" * 101], "name: "),
        (["orders-db"], "a key named 'orders-db' already exists"),
        (["fresh", "--rotation-days", "0"], "rotation period must be between 1 and 3650 days"),
        (["fresh", "--rotation-days", "3651"], "rotation period must be between 1 and 3650 days"),
        (["fresh", "--rotation-days", "-5"], "rotation period must be between 1 and 3650 days"),
        (["fresh", "--rotation-days", "ten"], "invalid int value: 'ten'"),
        (["fresh", "--activate-at", "tomorrow"], "--activate-at: 'tomorrow' is not an ISO 8601"),
        (["fresh", "--activate-at", "2999-02-30T00:00Z"], "is not an ISO 8601 time"),
        (
            ["fresh", "--activate-at", "2999-01-01T00:00"],
            "activation time must include a time zone",
        ),
        ([], "the following arguments are required: name"),
    ],
)
def test_key_create_bad_input(key, args: list[str], message: str) -> None:
    key("orders-db")
    refused(["key_create", *args], message)


# --- key_rotate -------------------------------------------------------------------------


def test_key_rotate(key) -> None:
    key("orders-db")
    out = run("key_rotate", "orders-db", "--min-decryption-version", "2")
    v2 = KeyVersion.objects.get(key__name="orders-db", is_primary=True)
    assert v2.number == 2
    assert out == (
        f"Rotated orders-db to version 2, fingerprint {v2.fingerprint} "
        "(minimum decryption version 2)\n"
    )
    assert run("key_rotate", "orders-db").startswith("Rotated orders-db to version 3,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no key named 'nope'"),
        (["paused"], "cannot rotate a key that is suspended"),
        (["orders-db", "--min-decryption-version", "1"], "can only move forward (it is 2)"),
        (["orders-db", "--min-decryption-version", "9"], "9 is past the new version 3"),
    ],
)
def test_key_rotate_bad_input(key, args: list[str], message: str) -> None:
    services.symmetric_key_rotate(actor=None, key=key("orders-db"), min_decryption_version=2)
    services.symmetric_key_suspend(actor=None, key=key("paused"))
    refused(["key_rotate", *args], message)


# --- key_compromise ---------------------------------------------------------------------


def test_key_compromise_primary_version(key) -> None:
    key("orders-db")
    out = run("key_compromise", "orders-db", "--version", "1", "--reason", "seen in a log")
    v2 = KeyVersion.objects.get(key__name="orders-db", is_primary=True)
    assert out == (
        f"Version 1 of orders-db reported compromised; version 2 (fingerprint "
        f"{v2.fingerprint}) is the new primary.\n"
    )


def test_key_compromise_older_version_in_the_past(key) -> None:
    services.symmetric_key_rotate(actor=None, key=key("orders-db"))
    out = run(
        "key_compromise",
        "orders-db",
        "--version",
        "1",
        "--reason",
        "old backup",
        "--at",
        "2024-03-01T10:00:00+01:00",
    )
    assert out == "Version 1 of orders-db reported compromised.\n"
    v1 = KeyVersion.objects.get(key__name="orders-db", number=1)
    assert v1.compromised_at.isoformat() == "2024-03-01T09:00:00+00:00"
    assert KeyVersion.objects.get(key__name="orders-db", is_primary=True).number == 2


def test_key_compromise_whole_key(key) -> None:
    services.symmetric_key_rotate(actor=None, key=key("orders-db"))
    out = run("key_compromise", "orders-db", "--reason", "HSM backup stolen")
    key_row = SymmetricKey.objects.get(name="orders-db")
    assert key_row.state == KeyState.COMPROMISED
    assert out == (
        f"Key orders-db reported compromised at {key_row.compromised_at.isoformat()} "
        "(versions: 1, 2); it can only be destroyed now.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--reason", "x"], "no key named 'nope'"),
        (["orders-db"], "the following arguments are required: --reason"),
        (["orders-db", "--reason", ""], "say why the key is considered compromised"),
        (["orders-db", "--reason", "  "], "say why the key is considered compromised"),
        (["orders-db", "--reason", "x", "--at", "2999-01-01T00:00Z"], "cannot be in the future"),
        (["orders-db", "--reason", "x", "--at", "last week"], "--at: 'last week' is not an ISO"),
        (["orders-db", "--reason", "x", "--at", "2024-01-01"], "must include a time zone"),
        (["orders-db", "--version", "9", "--reason", "x"], "key orders-db has no version 9"),
        (["orders-db", "--version", "one", "--reason", "x"], "invalid int value: 'one'"),
        (["gone", "--reason", "x"], "cannot report compromised a key that is compromised"),
        (["gone", "--version", "1", "--reason", "x"], "a key that is compromised"),
        (["later", "--version", "1", "--reason", "x"], "a key that is pre-active"),
    ],
)
def test_key_compromise_bad_input(key, args: list[str], message: str) -> None:
    key("orders-db")
    services.symmetric_key_compromise(actor=None, key=key("gone"), reason="x")
    key("later", activate_at=timezone.now() + timedelta(days=1))
    refused(["key_compromise", *args], message)


# --- key_list ---------------------------------------------------------------------------


def test_key_list(key) -> None:
    orders = key("orders-db", rotation_period_days=30)
    v2 = services.symmetric_key_rotate(actor=None, key=orders)
    SymmetricKey.objects.filter(pk=orders.pk).update(
        next_rotation_at=timezone.now() - timedelta(days=1)
    )
    key("billing", activate_at=timezone.now() + timedelta(days=2))
    paused = key("paused", rotation_period_days=10)
    services.symmetric_key_suspend(actor=None, key=paused)
    services.symmetric_key_compromise(actor=None, key=key("zz-leaked"), reason="x")

    lines = run("key_list").splitlines()

    assert lines[0].split() == ["NAME", "STATE", "PRIMARY", "FINGERPRINT", "NEXT", "ROTATION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["billing", "orders-db", "paused", "zz-leaked"]
    assert rows["orders-db"].split()[1:4] == ["active", "2", v2.fingerprint]
    assert rows["orders-db"].endswith("OVERDUE")
    assert rows["billing"].split()[1:3] == ["pre-active", "1"]
    assert rows["billing"].split()[-1] == "-"  # not scheduled yet
    assert "OVERDUE" not in rows["paused"]  # suspended keys are not rotated
    assert rows["zz-leaked"].split()[1:] == ["compromised", "-", "-", "-"]
    # Columns line up: every state starts where the header's STATE does.
    column = lines[0].index("STATE")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)

    filtered = run("key_list", "--state", "pre-active").splitlines()
    assert [line.split()[0] for line in filtered[1:]] == ["billing"]
    assert run("key_list", "--state", "destroyed") == "No keys.\n"


def test_key_list_bad_state(db) -> None:
    refused(["key_list", "--state", "bogus"], "unknown state 'bogus'; choose from pre_active")


def test_key_list_empty(db) -> None:
    assert run("key_list") == "No keys.\n"


# --- scheduled commands -----------------------------------------------------------------


def test_rotate_due_keys(key) -> None:
    orders = key("orders-db", rotation_period_days=30)
    SymmetricKey.objects.filter(pk=orders.pk).update(
        next_rotation_at=timezone.now() - timedelta(seconds=1)
    )
    assert run("rotate_due_keys") == "orders-db: rotated to version 2\n"
    assert run("rotate_due_keys") == "No keys due.\n"


def test_destroy_due_keys(key, custodian, second_custodian) -> None:
    assert run("destroy_due_keys") == "No keys due for destruction.\n"
    k = schedule_destruction(key("orders-db"), custodian, second_custodian)
    other = schedule_destruction(key("billing"), custodian, second_custodian)
    assert run("destroy_due_keys") == "No keys due for destruction.\n"
    make_due(k)
    make_due(other)
    assert run("destroy_due_keys").splitlines() == [
        "Destroyed key billing: material erased, records and audit kept.",
        "Destroyed key orders-db: material erased, records and audit kept.",
    ]
    assert not KeyVersion.objects.exclude(sealed_material=None).exists()
    assert run("destroy_due_keys") == "No keys due for destruction.\n"
