"""Rotation: a fresh primary each time, old versions decrypt only, the schedule runs once."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from kmsportal.crypto.symmetric import key_check_value
from kmsportal.keyring.services import unseal_material
from tests.key_backends import BOTH_BACKENDS
from vault import services
from vault.lifecycle import KeyState, VersionState
from vault.models import KeyVersion, SymmetricKey

from .conftest import another_node, audit_count, schedule_destruction, snapshot

# Signs, seals or destroys: runs on the software and the PKCS#11 (SoftHSM2) key backends.
pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_rotation_makes_a_new_primary_and_keeps_the_old_for_decryption(key) -> None:
    k = key("orders-db", rotation_period_days=30)
    v1 = k.versions.get()
    v2 = services.symmetric_key_rotate(actor=None, key=k)

    assert v2.number == 2 and v2.is_primary and v2.state == VersionState.ACTIVE
    v1.refresh_from_db()
    assert not v1.is_primary
    assert v1.state == VersionState.DEACTIVATED
    assert v1.get_state_display() == "decrypt only"
    assert v1.deactivated_at is not None
    assert v1.fingerprint != v2.fingerprint
    # The old version still unseals (it decrypts existing data) and matches its fingerprint.
    assert key_check_value(unseal_material(v1.sealed_material, aad=v1.aad)) == v1.fingerprint
    results = services.key_material_verify(actor=None, key=k)
    assert [(r.number, r.ok) for r in results] == [(1, True), (2, True)]
    k.refresh_from_db()
    assert k.state == KeyState.ACTIVE
    assert k.last_rotated_at == v2.created_at
    assert k.next_rotation_at == v2.created_at + timedelta(days=30)


def test_version_numbers_increase_and_one_primary_remains(key) -> None:
    k = key()
    numbers = [services.symmetric_key_rotate(actor=None, key=k).number for _ in range(3)]
    assert numbers == [2, 3, 4]
    assert list(k.versions.filter(is_primary=True).values_list("number", flat=True)) == [4]
    assert sorted(k.versions.values_list("state", flat=True)) == [
        VersionState.ACTIVE,
        *[VersionState.DEACTIVATED] * 3,
    ]
    assert len(set(k.versions.values_list("fingerprint", flat=True))) == 4


def test_min_decryption_version_moves_forward_only(key) -> None:
    k = key()
    services.symmetric_key_rotate(actor=None, key=k, min_decryption_version=2)  # v2
    k.refresh_from_db()
    assert k.min_decryption_version == 2

    before = snapshot(k)
    with pytest.raises(
        services.VaultError, match=r"minimum decryption version can only move forward \(it is 2\)"
    ):
        services.symmetric_key_rotate(actor=None, key=k, min_decryption_version=1)
    with pytest.raises(
        services.VaultError, match="minimum decryption version 4 is past the new version 3"
    ):
        services.symmetric_key_rotate(actor=None, key=k, min_decryption_version=4)
    assert snapshot(k) == before  # no version made, no event

    services.symmetric_key_rotate(actor=None, key=k, min_decryption_version=2)  # same: fine
    v4 = services.symmetric_key_rotate(actor=None, key=k, min_decryption_version=4)
    k.refresh_from_db()
    assert (v4.number, k.min_decryption_version) == (4, 4)
    services.symmetric_key_rotate(actor=None, key=k)  # no change asked: it stays
    k.refresh_from_db()
    assert k.min_decryption_version == 4


def test_rotate_due_keys_rotates_overdue_keys_once_and_activates_due_keys(key) -> None:
    overdue = key("orders-db", rotation_period_days=30)
    services.symmetric_key_rotate(actor=None, key=overdue)
    services.symmetric_key_rotate(actor=None, key=overdue)  # now at version 3
    SymmetricKey.objects.filter(pk=overdue.pk).update(
        next_rotation_at=timezone.now() - timedelta(hours=1)
    )
    not_due = key("payroll", rotation_period_days=30)
    no_schedule = key("static-key")
    pending = key(
        "billing", rotation_period_days=7, activate_at=timezone.now() + timedelta(hours=1)
    )
    later = key("later", activate_at=timezone.now() + timedelta(days=3))
    SymmetricKey.objects.filter(pk=pending.pk).update(
        activate_at=timezone.now() - timedelta(minutes=1)
    )
    events = audit_count()

    first = run("rotate_due_keys")

    assert first.splitlines() == ["billing: activated", "orders-db: rotated to version 4"]
    assert audit_count() == events + 2
    overdue.refresh_from_db()
    assert overdue.versions.count() == 4
    assert overdue.versions.get(is_primary=True).number == 4
    assert not overdue.rotation_overdue
    assert overdue.next_rotation_at > timezone.now() + timedelta(days=29)
    pending.refresh_from_db()
    assert pending.state == KeyState.ACTIVE
    assert pending.activate_at is None
    assert pending.versions.get().state == VersionState.ACTIVE
    assert pending.next_rotation_at > timezone.now() + timedelta(days=6)
    for untouched in (not_due, no_schedule):
        assert untouched.versions.count() == 1
    later.refresh_from_db()
    assert later.state == KeyState.PRE_ACTIVE

    assert run("rotate_due_keys") == "No keys due.\n"  # idempotent
    assert overdue.versions.count() == 4
    assert audit_count() == events + 2


def test_rotate_due_keys_with_nothing_due(key) -> None:
    key("orders-db", rotation_period_days=30)
    assert run("rotate_due_keys") == "No keys due.\n"


def test_suspended_or_deactivated_keys_are_not_rotated_by_the_schedule(key) -> None:
    for name, service in (
        ("paused", services.symmetric_key_suspend),
        ("retired", services.symmetric_key_deactivate),
    ):
        k = key(name, rotation_period_days=1)
        service(actor=None, key=k)
    SymmetricKey.objects.update(next_rotation_at=timezone.now() - timedelta(days=1))
    assert run("rotate_due_keys") == "No keys due.\n"
    assert KeyVersion.objects.count() == 2


def test_rotation_schedule_survives_a_cancelled_destruction_of_a_suspended_key(
    key, custodian, second_custodian
) -> None:
    k = key("orders-db", rotation_period_days=30)
    services.symmetric_key_suspend(actor=custodian, key=k)
    schedule_destruction(k, custodian, second_custodian)
    services.symmetric_key_destruction_cancel(actor=custodian, key=k)
    k = services.symmetric_key_resume(actor=custodian, key=k)
    assert k.state == KeyState.ACTIVE
    assert k.next_rotation_at is not None  # else rotate_due_keys never rotates it again


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rotate_due_skips_a_key_activated_meanwhile_by_another_node(key) -> None:
    k = key("orders-db", activate_at=timezone.now() + timedelta(hours=1))
    SymmetricKey.objects.filter(pk=k.pk).update(activate_at=timezone.now() - timedelta(minutes=1))

    with another_node(lambda: services.symmetric_key_activate(actor=None, key=k)):
        done = services.symmetric_keys_rotate_due()

    assert done == []  # the other node did it
    k.refresh_from_db()
    assert k.state == KeyState.ACTIVE
