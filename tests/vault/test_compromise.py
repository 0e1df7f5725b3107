"""Reporting a version or a whole key compromised: irreversible, replaced at once."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from tests.key_backends import BOTH_BACKENDS
from vault import services
from vault.lifecycle import TRANSITIONS, InvalidTransition, KeyAction, KeyState, VersionState
from vault.models import KeyVersion

from .conftest import snapshot

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


def test_compromising_a_non_primary_version_keeps_the_primary(key, custodian) -> None:
    k = key()
    v2 = services.symmetric_key_rotate(actor=custodian, key=k)

    replacement = services.key_version_compromise(
        actor=custodian, key=k, number=1, reason="seen in a crash dump"
    )

    assert replacement is None
    v1 = k.versions.get(number=1)
    assert v1.state == VersionState.COMPROMISED
    assert v1.compromise_reason == "seen in a crash dump"
    assert v1.compromised_at is not None
    primary = k.versions.get(is_primary=True)
    assert (primary.number, primary.fingerprint) == (2, v2.fingerprint)
    k.refresh_from_db()
    assert k.state == KeyState.ACTIVE
    assert k.versions.count() == 2
    event = last_event()
    assert event.action == "key.version_compromised"
    assert event.details["was_primary"] is False
    assert event.details["replacement_version"] is None


@pytest.mark.parametrize("state", [KeyState.ACTIVE, KeyState.SUSPENDED])
def test_compromising_the_primary_makes_a_fresh_primary_at_once(
    key_in_state, custodian, state: KeyState
) -> None:
    k = key_in_state(state)
    old = k.versions.get()
    events = AuditEvent.objects.count()

    replacement = services.key_version_compromise(
        actor=custodian, key=k, number=1, reason="operator copied it"
    )

    assert replacement is not None and replacement.number == 2
    assert replacement.fingerprint != old.fingerprint
    assert list(k.versions.filter(is_primary=True).values_list("number", flat=True)) == [2]
    old.refresh_from_db()
    assert (old.state, old.is_primary) == (VersionState.COMPROMISED, False)
    k.refresh_from_db()
    assert k.state == state
    # One transaction, one event that names the replacement.
    assert AuditEvent.objects.count() == events + 1
    event = last_event()
    assert event.details["was_primary"] is True
    assert event.details["replacement_version"] == 2
    assert event.details["replacement_fingerprint"] == replacement.fingerprint


def test_compromising_the_primary_of_a_deactivated_key_makes_no_new_material(
    key_in_state, custodian
) -> None:
    k = key_in_state(KeyState.DEACTIVATED)
    assert services.key_version_compromise(actor=custodian, key=k, number=1, reason="x") is None
    assert k.versions.count() == 1
    assert not k.versions.filter(is_primary=True).exists()


def test_compromise_time_in_the_past_is_kept(key, custodian) -> None:
    k = key()
    services.symmetric_key_rotate(actor=custodian, key=k)
    three_days_ago = timezone.now() - timedelta(days=3)
    services.key_version_compromise(
        actor=custodian, key=k, number=1, reason="old backup", compromised_at=three_days_ago
    )
    assert k.versions.get(number=1).compromised_at == three_days_ago

    yesterday = timezone.now() - timedelta(days=1)
    services.symmetric_key_compromise(
        actor=custodian, key=k, reason="whole key leaked", compromised_at=yesterday
    )
    k.refresh_from_db()
    assert k.compromised_at == yesterday
    # A version compromised earlier keeps its own (earlier) time.
    assert k.versions.get(number=1).compromised_at == three_days_ago
    assert k.versions.get(number=2).compromised_at == yesterday
    assert last_event().details["compromised_at"] == yesterday.isoformat()


@pytest.mark.parametrize(
    ("reason", "when", "message"),
    [
        ("leaked", timezone.now() + timedelta(days=1), "cannot be in the future"),
        ("leaked", datetime(2024, 1, 1, 12, 0), "must include a time zone"),
        ("", None, "say why the key is considered compromised"),
        ("   \n", None, "say why the key is considered compromised"),
    ],
    ids=["future", "naive", "empty-reason", "blank-reason"],
)
@pytest.mark.parametrize("whole_key", [True, False], ids=["key", "version"])
def test_bad_compromise_input_is_refused_and_changes_nothing(
    key, custodian, reason: str, when, message: str, whole_key: bool
) -> None:
    k = key()
    before = snapshot(k)
    with pytest.raises(services.VaultError, match=message):
        if whole_key:
            services.symmetric_key_compromise(
                actor=custodian, key=k, reason=reason, compromised_at=when
            )
        else:
            services.key_version_compromise(
                actor=custodian, key=k, number=1, reason=reason, compromised_at=when
            )
    assert snapshot(k) == before


def test_unknown_or_already_compromised_version_is_refused(key, custodian) -> None:
    k = key()
    services.symmetric_key_rotate(actor=custodian, key=k)
    services.key_version_compromise(actor=custodian, key=k, number=1, reason="x")
    before = snapshot(k)
    with pytest.raises(services.VaultError, match="key orders-db has no version 9"):
        services.key_version_compromise(actor=custodian, key=k, number=9, reason="x")
    with pytest.raises(services.VaultError, match="version 1 of orders-db is already compromised"):
        services.key_version_compromise(actor=custodian, key=k, number=1, reason="x")
    assert snapshot(k) == before


def test_compromising_the_whole_key_marks_every_live_version_and_is_final(key, custodian) -> None:
    k = key("orders-db", rotation_period_days=30)
    services.symmetric_key_rotate(actor=custodian, key=k)
    services.symmetric_key_rotate(actor=custodian, key=k)

    k = services.symmetric_key_compromise(actor=custodian, key=k, reason="HSM backup stolen")

    assert k.state == KeyState.COMPROMISED
    assert k.compromise_reason == "HSM backup stolen"
    assert k.next_rotation_at is None
    versions = list(k.versions.order_by("number"))
    assert [v.state for v in versions] == [VersionState.COMPROMISED] * 3
    assert not any(v.is_primary for v in versions)
    assert all(v.compromise_reason == "HSM backup stolen" for v in versions)
    assert sorted(last_event().details["versions"]) == [1, 2, 3]

    # The table has no way out of "compromised" except towards destruction ...
    for action, table in TRANSITIONS.items():
        if KeyState.COMPROMISED in table:
            assert action in (KeyAction.REQUEST_DESTRUCTION, KeyAction.SCHEDULE_DESTRUCTION)
    # ... and the services agree.
    before = snapshot(k)
    for service in (
        services.symmetric_key_activate,
        services.symmetric_key_resume,
        services.symmetric_key_rotate,
        services.symmetric_key_suspend,
        services.symmetric_key_deactivate,
    ):
        with pytest.raises(InvalidTransition, match="a key that is compromised"):
            service(actor=custodian, key=k)
    with pytest.raises(InvalidTransition, match="a key that is compromised"):
        services.symmetric_key_compromise(actor=custodian, key=k, reason="again")
    assert snapshot(k) == before


def test_compromised_material_is_never_unsealed_by_the_integrity_check(key, custodian) -> None:
    k = key()
    services.symmetric_key_rotate(actor=custodian, key=k)
    services.key_version_compromise(actor=custodian, key=k, number=1, reason="x")
    # Ruin the compromised blob: a check that opened it would now fail.
    v1 = k.versions.get(number=1)
    KeyVersion.objects.filter(pk=v1.pk).update(sealed_material=b"\x01\x05bogus" + b"\0" * 40)

    results = services.key_material_verify(actor=custodian, key=k)

    assert [(r.number, r.ok) for r in results] == [(2, True)]
    event = last_event()
    assert (event.action, event.outcome) == ("key.integrity_checked", "success")
    assert event.details["versions_checked"] == [2]

    services.symmetric_key_compromise(actor=custodian, key=k, reason="all of it")
    KeyVersion.objects.filter(key=k).update(sealed_material=b"\x01\x05bogus" + b"\0" * 40)
    assert services.key_material_verify(actor=custodian, key=k) == []
    assert last_event().details["versions_checked"] == []
