"""Sealed key material: bound to its own row, tamper-evident, and re-sealable under a new
master key (resumably, stopping cleanly at a damaged row)."""

from __future__ import annotations

import base64
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent
from audit.services import audit_event_record
from kmsportal.checks import check_master_keyring
from kmsportal.crypto.envelope import EnvelopeIntegrityError
from kmsportal.crypto.symmetric import key_check_value
from kmsportal.keyring.events import keyring_event_recorder_set
from kmsportal.keyring.services import (
    keyring_get,
    keyring_reset,
    sealed_blob_counts,
    sealed_blobs_rewrap,
    sealed_fields,
    unseal,
    unseal_material,
)
from tests.key_backends import BOTH_BACKENDS, SOFTWARE_ONLY
from vault import services
from vault.models import KeyVersion, SymmetricKey

pytestmark = pytest.mark.django_db

KEY_1 = base64.b64encode(b"1" * 32).decode()
KEY_2 = base64.b64encode(b"2" * 32).decode()
OLD = f"k1:{KEY_1}"
BOTH = f"k2:{KEY_2},k1:{KEY_1}"
NEW = f"k2:{KEY_2}"


@pytest.fixture
def master_keys(settings):
    """Start every test under k1 alone (before anything is sealed); switch with the callable."""

    def configure(spec: str) -> None:
        settings.KMS_MASTER_KEYS = spec
        keyring_reset()

    configure(OLD)
    yield configure
    keyring_reset()


@pytest.fixture
def versions(master_keys, key) -> list[KeyVersion]:
    """Five versions sealed under k1: orders-db v1-v3, billing v1-v2."""
    orders = key("orders-db")
    services.symmetric_key_rotate(actor=None, key=orders)
    services.symmetric_key_rotate(actor=None, key=orders)
    billing = key("billing")
    services.symmetric_key_rotate(actor=None, key=billing)
    return list(KeyVersion.objects.order_by("pk"))


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def all_blobs() -> dict[tuple[str, object], bytes]:
    """Every sealed blob of every registered column, by (column, row)."""
    found = {}
    for entry in sealed_fields():
        for pk, blob in entry.model.objects.exclude(
            **{f"{entry.field_name}__isnull": True}
        ).values_list("pk", entry.field_name):
            found[(entry.model_label, pk)] = bytes(blob)
    return found


def verify_all() -> None:
    for key in SymmetricKey.objects.all():
        assert all(r.ok for r in services.key_material_verify(actor=None, key=key))


@BOTH_BACKENDS
def test_material_is_32_bytes_and_opens_only_with_its_own_aad(versions) -> None:
    v1, v2 = KeyVersion.objects.filter(key__name="orders-db").order_by("number")[:2]
    material = unseal_material(v1.sealed_material, aad=v1.aad)
    assert len(material) == 32
    assert key_check_value(material) == v1.fingerprint
    assert v1.aad == f"vault.KeyVersion:{v1.key_id}:1".encode()
    with pytest.raises(EnvelopeIntegrityError):
        unseal_material(v1.sealed_material, aad=v2.aad)


@BOTH_BACKENDS
def test_a_blob_copied_onto_another_version_fails_the_check(versions) -> None:
    orders = SymmetricKey.objects.get(name="orders-db")
    v1, v2 = orders.versions.order_by("number")[:2]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE vault_keyversion SET sealed_material = "
            "(SELECT sealed_material FROM vault_keyversion WHERE id = %s) WHERE id = %s",
            [v1.pk, v2.pk],
        )
    events = AuditEvent.objects.count()

    with pytest.raises(services.KeyIntegrityError) as caught:
        services.key_material_verify(actor=None, key=orders)

    assert "key orders-db" in str(caught.value)
    assert "version 2 (" in str(caught.value)
    assert "version 1" not in str(caught.value) and "version 3" not in str(caught.value)
    assert AuditEvent.objects.count() == events + 1
    event = last_event()
    assert (event.action, event.outcome) == ("key.integrity_failed", "error")
    assert event.target_label == "orders-db"
    assert event.details["versions_checked"] == [1, 2, 3]
    assert [f["version"] for f in event.details["failed"]] == [2]


@BOTH_BACKENDS
@pytest.mark.parametrize("position", [-1, -20, 20], ids=["tag", "ciphertext", "nonce"])
def test_a_flipped_byte_fails_the_check(versions, position: int) -> None:
    billing = SymmetricKey.objects.get(name="billing")
    v1 = billing.versions.get(number=1)
    blob = bytearray(bytes(v1.sealed_material))
    blob[position] ^= 0x01
    KeyVersion.objects.filter(pk=v1.pk).update(sealed_material=bytes(blob))

    with pytest.raises(
        services.KeyIntegrityError, match=r"key billing failed its check: version 1 \("
    ):
        services.key_material_verify(actor=None, key=billing)

    event = last_event()
    assert (event.action, event.outcome) == ("key.integrity_failed", "error")
    assert event.details["failed"][0]["version"] == 1


@BOTH_BACKENDS
def test_an_intact_key_checks_clean(versions) -> None:
    orders = SymmetricKey.objects.get(name="orders-db")
    assert [r.ok for r in services.key_material_verify(actor=None, key=orders)] == [True] * 3
    assert (last_event().action, last_event().outcome) == ("key.integrity_checked", "success")


# The rewrap tests below are software-only: they rotate the software master keyring
# (KMS_MASTER_KEYS k1 -> k2, the `master_keys` fixture) and read the envelope's key id and the
# plain material out of the raw blobs. With pkcs11 the master keys are token objects named by
# KMS_PKCS11_MASTER_KEY_IDS and each version's material is sealed by its own token key;
# moving software-sealed data into the token is tests/kmsportal/test_keyring_migrate.py's.


@SOFTWARE_ONLY
def test_rewrap_moves_everything_to_the_new_master_key(master_keys, versions) -> None:
    master_keys(NEW)  # k1 removed before the rewrap: refused, it still seals the versions
    found = [f"{m.id}: {m.msg}" for m in check_master_keyring()]
    assert len(found) == 1
    assert found[0].startswith("keyring.E003: master key 'k1' was removed")
    # The key versions and the audit log's sealed keys (its MAC key, audit migration 0005).
    others = sum(sealed_blob_counts().values()) - len(versions)
    assert f"still seals {len(versions) + others} stored blob(s)" in found[0]

    master_keys(BOTH)
    out = run("rewrap")

    assert f"vault.KeyVersion.sealed_material: re-sealed {len(versions)} of {len(versions)}" in out
    assert "Every sealed blob is under 'k2'" in out
    master_keys(NEW)
    assert check_master_keyring() == []
    assert set(sealed_blob_counts()) == {"k2"}
    verify_all()
    for version in versions:  # same material, same row binding, new master key
        fresh = KeyVersion.objects.get(pk=version.pk)
        assert bytes(fresh.sealed_material) != bytes(version.sealed_material)
        assert key_check_value(unseal(fresh.sealed_material, aad=fresh.aad)) == version.fingerprint


@SOFTWARE_ONLY
def test_an_interrupted_rewrap_resumes_and_keeps_the_finished_batch(master_keys, versions) -> None:
    master_keys(BOTH)
    total = sum(sealed_blob_counts().values())
    others = total - len(versions)  # the audit log's sealed keys, re-sealed first
    progress = sealed_blobs_rewrap(batch_size=2)
    for first in progress:
        if first.field.startswith("vault."):
            break
    progress.close()  # the process stops after its first batch of key versions
    assert first.rewrapped == 2
    assert sealed_blob_counts() == {"k2": 2 + others, "k1": total - 2 - others}
    finished = {row: blob for row, blob in all_blobs().items() if blob[2:4] == b"k2"}
    assert len(finished) == 2 + others

    out = run("rewrap", "--batch", "2")

    assert f"Re-sealed {total - 2 - others} blob(s); {total} under 'k2'." in out
    assert sealed_blob_counts() == {"k2": total}
    after = all_blobs()
    assert {row: after[row] for row in finished} == finished  # not re-sealed again
    master_keys(NEW)
    assert check_master_keyring() == []
    verify_all()


@SOFTWARE_ONLY
def test_a_tampered_blob_stops_rewrap_naming_the_row(master_keys, versions) -> None:
    master_keys(BOTH)
    third = versions[2]  # in the second batch of two
    blob = bytearray(bytes(third.sealed_material))
    blob[-1] ^= 0xFF
    KeyVersion.objects.filter(pk=third.pk).update(sealed_material=bytes(blob))

    others = sum(sealed_blob_counts().values()) - len(versions)  # the audit log's keys
    with pytest.raises(CommandError) as caught:
        run("rewrap", "--batch", "2")

    message = str(caught.value)
    assert f"vault.KeyVersion.sealed_material of row {third.pk}:" in message
    assert "Earlier batches are kept" in message
    assert f"stopped after re-sealing {2 + others} blob(s)" in message
    by_row = {
        pk: bytes(b)[2:4] for pk, b in KeyVersion.objects.values_list("pk", "sealed_material")
    }
    assert [by_row[v.pk] for v in versions] == [b"k2", b"k2", b"k1", b"k1", b"k1"]
    assert keyring_get().primary_key_id == "k2"


@SOFTWARE_ONLY
def test_rewrap_reports_each_batch_through_the_keyring_hook_in_its_transaction(
    master_keys, versions
) -> None:
    """The keyring never imports audit: the audit app connects its recorder in ready(). A
    batch is re-sealed only together with its event: with no recorder connected the first
    batch rolls back and nothing is re-sealed."""
    master_keys(BOTH)
    total = sum(sealed_blob_counts().values())
    before = AuditEvent.objects.count()
    keyring_event_recorder_set(None)
    try:
        with pytest.raises(ImproperlyConfigured, match="refusing an unaudited keyring change"):
            list(sealed_blobs_rewrap(batch_size=2))
    finally:
        keyring_event_recorder_set(audit_event_record)
    assert sealed_blob_counts() == {"k1": total}
    assert AuditEvent.objects.count() == before

    list(sealed_blobs_rewrap(batch_size=2))

    events = AuditEvent.objects.filter(action="keyring.rewrapped").order_by("sequence")
    assert sum(event.details["rewrapped"] for event in events) == total
    assert {event.details["to"] for event in events} == {"k2"}
