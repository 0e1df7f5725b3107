"""Destruction: two custodians, a waiting period, then crypto-shredding that keeps the record."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.two_person import TwoPersonError
from tests.key_backends import BOTH_BACKENDS
from vault import services
from vault.lifecycle import InvalidTransition, KeyState, VersionState
from vault.models import DestructionRequest, KeyVersion, SymmetricKey

from .conftest import another_node, make_due, schedule_destruction, snapshot

# Signs, seals or destroys: runs on the software and the PKCS#11 (SoftHSM2) key backends.
pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def raw_material(version_ids: list[int]) -> list[object]:
    """The sealed_material column as the database holds it (no ORM in between)."""
    placeholders = ", ".join(["%s"] * len(version_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sealed_material FROM vault_keyversion WHERE id IN ({placeholders}) "
            "ORDER BY id",
            version_ids,
        )
        return [row[0] for row in cursor.fetchall()]


def test_the_requester_cannot_approve_their_own_request(key, custodian) -> None:
    k = key()
    request = services.destruction_request_create(
        actor=custodian, key=k, waiting_days=7, reason="retired"
    )
    before = snapshot(k)
    with pytest.raises(TwoPersonError, match="a different key custodian must approve"):
        services.destruction_request_approve(actor=custodian, request=request)
    assert snapshot(k) == before
    request.refresh_from_db()
    assert request.status == DestructionRequest.Status.PENDING


@pytest.mark.parametrize("waiting_days", [7, 30])
def test_a_second_custodian_schedules_the_destruction(
    key, custodian, second_custodian, waiting_days: int
) -> None:
    k = key("orders-db", rotation_period_days=90)
    request = services.destruction_request_create(
        actor=custodian, key=k, waiting_days=waiting_days, reason="service retired"
    )
    assert request.expires_at == request.requested_at + timedelta(hours=24)
    start = timezone.now()

    k = services.destruction_request_approve(actor=second_custodian, request=request)

    end = timezone.now()
    assert k.state == KeyState.PENDING_DESTRUCTION
    assert k.state_before_destruction == KeyState.ACTIVE
    assert start + timedelta(days=waiting_days) <= k.destroy_after
    assert k.destroy_after <= end + timedelta(days=waiting_days)
    assert k.next_rotation_at is None
    request.refresh_from_db()
    assert request.status == DestructionRequest.Status.APPROVED
    assert (request.decided_by, request.decided_by_name) == (second_custodian, "lou-custodian")
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.action == "key.destruction_approved"
    assert event.actor_name == "lou-custodian"
    assert event.details["requested_by"] == "kim-custodian"


@pytest.mark.parametrize("waiting_days", [0, 6, 31, 365])
def test_waiting_period_outside_7_to_30_days_is_refused(key, custodian, waiting_days) -> None:
    k = key()
    before = snapshot(k)
    with pytest.raises(services.VaultError, match="the waiting period must be 7 to 30 days"):
        services.destruction_request_create(
            actor=custodian, key=k, waiting_days=waiting_days, reason="retired"
        )
    assert snapshot(k) == before


def test_only_one_request_may_wait_for_approval(key, custodian, second_custodian) -> None:
    k = key()
    services.destruction_request_create(actor=custodian, key=k, waiting_days=7, reason="retired")
    before = snapshot(k)
    with pytest.raises(services.VaultError, match="already waiting for approval"):
        services.destruction_request_create(
            actor=second_custodian, key=k, waiting_days=10, reason="retired"
        )
    assert snapshot(k) == before


def test_a_request_expires_after_24_hours(key, custodian, second_custodian) -> None:
    k = key()
    request = services.destruction_request_create(
        actor=custodian, key=k, waiting_days=7, reason="retired"
    )
    DestructionRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    before = snapshot(k)
    with pytest.raises(services.VaultError, match=r"this request expired at .*; ask for a new one"):
        services.destruction_request_approve(actor=second_custodian, request=request)
    assert snapshot(k) == before
    assert SymmetricKey.objects.get(pk=k.pk).state == KeyState.ACTIVE

    # The lapsed request no longer blocks a new one; it is visibly expired, and audited.
    fresh = services.destruction_request_create(
        actor=second_custodian, key=k, waiting_days=7, reason="retired"
    )
    request.refresh_from_db()
    assert request.status == DestructionRequest.Status.EXPIRED == "expired"
    lapsed = AuditEvent.objects.get(action="key.destruction_expired")
    assert lapsed.details["request"] == request.pk
    assert lapsed.details["requested_by"] == custodian.username
    k = services.destruction_request_approve(actor=custodian, request=fresh)
    assert k.state == KeyState.PENDING_DESTRUCTION


def test_reject_and_withdraw(key, custodian, second_custodian) -> None:
    k = key()
    request = services.destruction_request_create(
        actor=custodian, key=k, waiting_days=7, reason="retired"
    )
    services.destruction_request_reject(actor=second_custodian, request=request)
    request.refresh_from_db()
    assert request.status == DestructionRequest.Status.REJECTED
    with pytest.raises(services.VaultError, match="this request is already rejected"):
        services.destruction_request_approve(actor=second_custodian, request=request)

    request = services.destruction_request_create(
        actor=custodian, key=k, waiting_days=7, reason="retired"
    )
    services.destruction_request_reject(actor=custodian, request=request)
    request.refresh_from_db()
    assert request.status == DestructionRequest.Status.WITHDRAWN
    k.refresh_from_db()
    assert k.state == KeyState.ACTIVE


@pytest.mark.parametrize(
    "state",
    [
        KeyState.PRE_ACTIVE,
        KeyState.ACTIVE,
        KeyState.SUSPENDED,
        KeyState.DEACTIVATED,
        KeyState.COMPROMISED,
    ],
    ids=lambda s: s.value,
)
def test_cancel_returns_the_key_to_its_earlier_state(
    key_in_state, custodian, second_custodian, state: KeyState
) -> None:
    k = key_in_state(state, rotation_period_days=30)
    schedule_destruction(k, custodian, second_custodian)

    k = services.symmetric_key_destruction_cancel(actor=second_custodian, key=k)

    assert k.state == state
    assert (k.destroy_after, k.state_before_destruction) == (None, "")
    if state == KeyState.ACTIVE:
        assert k.next_rotation_at > timezone.now() + timedelta(days=29)
    assert AuditEvent.objects.order_by("-sequence").first().action == "key.destruction_cancelled"


def test_destroy_due_keys_waits_for_the_date_then_erases_only_the_material(
    key, custodian, second_custodian
) -> None:
    k = key()
    services.symmetric_key_rotate(actor=custodian, key=k)
    schedule_destruction(k, custodian, second_custodian, waiting_days=7)
    ids = list(k.versions.order_by("id").values_list("id", flat=True))
    fingerprints = list(k.versions.order_by("id").values_list("fingerprint", flat=True))
    events_before = list(AuditEvent.objects.order_by("sequence").values_list("sequence", "hash"))

    assert run("destroy_due_keys") == "No keys due for destruction.\n"
    k.refresh_from_db()
    assert k.state == KeyState.PENDING_DESTRUCTION
    assert all(blob is not None for blob in raw_material(ids))

    make_due(k)
    out = run("destroy_due_keys")

    assert out == "Destroyed key orders-db: material erased, records and audit kept.\n"
    assert raw_material(ids) == [None, None]  # NULL in the database itself
    k.refresh_from_db()
    assert k.state == KeyState.DESTROYED
    assert k.destroyed_at is not None
    versions = list(KeyVersion.objects.filter(pk__in=ids).order_by("id"))
    assert [v.fingerprint for v in versions] == fingerprints
    assert {v.state for v in versions} == {VersionState.DESTROYED}
    assert not any(v.is_primary for v in versions)
    # Every earlier event is still there, unchanged, followed by the destruction.
    assert (
        list(AuditEvent.objects.order_by("sequence").values_list("sequence", "hash"))[
            : len(events_before)
        ]
        == events_before
    )
    last = AuditEvent.objects.order_by("-sequence").first()
    assert (last.action, last.actor_name, last.details["versions"]) == (
        "key.destroyed",
        "system",
        2,
    )
    assert run("destroy_due_keys") == "No keys due for destruction.\n"  # idempotent


def test_destroying_a_compromised_key_keeps_the_compromise_visible(
    key_in_state, custodian, second_custodian
) -> None:
    k = key_in_state(KeyState.DESTROYED_COMPROMISED)
    assert k.compromised_at is not None
    assert list(k.versions.values_list("state", "sealed_material")) == [
        (VersionState.DESTROYED_COMPROMISED, None)
    ]


def test_destroying_a_key_with_one_compromised_version(key, custodian, second_custodian) -> None:
    k = key()
    services.symmetric_key_rotate(actor=custodian, key=k)
    services.key_version_compromise(actor=custodian, key=k, number=1, reason="x")
    schedule_destruction(k, custodian, second_custodian)
    make_due(k)
    assert services.symmetric_keys_destroy_due() == ["orders-db"]
    k.refresh_from_db()
    assert k.state == KeyState.DESTROYED
    assert dict(k.versions.values_list("number", "state")) == {
        1: VersionState.DESTROYED_COMPROMISED,
        2: VersionState.DESTROYED,
    }


def test_the_destroy_service_refuses_before_the_date(key, custodian, second_custodian) -> None:
    k = schedule_destruction(key(), custodian, second_custodian)
    before = snapshot(k)
    with pytest.raises(services.VaultError, match="orders-db may not be destroyed before"):
        services.symmetric_key_destroy(actor=None, key=k)
    assert snapshot(k) == before


@pytest.mark.parametrize("state", [KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED])
def test_a_destroyed_key_refuses_every_action(
    key_in_state, custodian, second_custodian, state: KeyState
) -> None:
    k = key_in_state(state)
    before = snapshot(k)
    calls = [
        lambda: services.symmetric_key_activate(actor=custodian, key=k),
        lambda: services.symmetric_key_rotate(actor=custodian, key=k),
        lambda: services.symmetric_key_suspend(actor=custodian, key=k),
        lambda: services.symmetric_key_resume(actor=custodian, key=k),
        lambda: services.symmetric_key_deactivate(actor=custodian, key=k),
        lambda: services.symmetric_key_compromise(actor=custodian, key=k, reason="x"),
        lambda: services.key_version_compromise(actor=custodian, key=k, number=1, reason="x"),
        lambda: services.destruction_request_create(
            actor=custodian, key=k, waiting_days=7, reason="retired"
        ),
        lambda: services.symmetric_key_destruction_cancel(actor=custodian, key=k),
        lambda: services.symmetric_key_destroy(actor=None, key=k),
    ]
    for call in calls:
        with pytest.raises(InvalidTransition, match=re.escape(f"a key that is {state.label}")):
            call()
    assert snapshot(k) == before
    assert services.symmetric_keys_destroy_due() == []
    assert services.symmetric_keys_rotate_due() == []
    # Nothing sealed is left to check.
    assert services.key_material_verify(actor=custodian, key=k) == []


def test_destroy_due_honours_its_now_argument(key, custodian, second_custodian) -> None:
    k = schedule_destruction(key(), custodian, second_custodian, waiting_days=7)
    assert services.symmetric_keys_destroy_due(now=timezone.now() + timedelta(days=6)) == []
    assert services.symmetric_keys_destroy_due(now=timezone.now() + timedelta(days=8)) == [k.name]


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_destroy_due_skips_a_key_whose_destruction_was_cancelled_meanwhile(
    key, custodian, second_custodian
) -> None:
    k = schedule_destruction(key(), custodian, second_custodian)
    make_due(k)

    with another_node(lambda: services.symmetric_key_destruction_cancel(actor=custodian, key=k)):
        destroyed = services.symmetric_keys_destroy_due()

    assert destroyed == []
    k.refresh_from_db()
    assert k.state == KeyState.ACTIVE
    assert not k.versions.filter(sealed_material=None).exists()
