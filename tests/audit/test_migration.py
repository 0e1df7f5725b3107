"""Version 1 (hash-chained) events become the first leaves; their checkpoints still verify."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from audit.checking import audit_chain_check
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditLeaf
from audit.sequencer import audit_integrate
from audit.services import audit_signing_key_ensure, audit_signing_key_private
from kmsportal.crypto.audit_chain import (
    GENESIS_HASH,
    checkpoint_payload,
    checkpoint_sign,
    event_canonical_bytes,
    event_hash,
    format_time,
)
from tests.audit.helpers import append_events, raw_tampering

pytestmark = pytest.mark.django_db

migration = importlib.import_module("audit.migrations.0006_tree_from_chain")


def _version_1_log(count: int) -> list[AuditEvent]:
    """Events as version 1 wrote them: gap-free sequence, prev_hash/hash chain, no MAC; the
    chain head row and a signed checkpoint at the end."""
    prev = GENESIS_HASH
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    events = []
    for sequence in range(1, count + 1):
        event = AuditEvent(
            sequence=sequence,
            time=t0 + timedelta(seconds=sequence),
            actor_type="system",
            actor_name="system",
            action="access.denied",
            target_type="url",
            target_label=f"/v1/{sequence}",
            outcome="denied",
            details={"i": sequence},
            prev_hash=prev,
        )
        event.hash = prev = event_hash(prev, event_canonical_bytes(event.chain_fields()))
        event.save()
        events.append(event)
    AuditChainHead(pk=1, sequence=count, hash=prev).save()
    row, _ = audit_signing_key_ensure()
    now = timezone.now()
    payload = checkpoint_payload(
        sequence=count, event_hash=prev, time=format_time(now), previous_signature=""
    )
    AuditCheckpoint(
        sequence=count,
        hash=prev,
        time=now,
        previous_signature="",
        signature=checkpoint_sign(audit_signing_key_private(row), payload),
        signing_key=row,
    ).save()
    return events


def test_chained_events_become_the_first_leaves_and_stay_verifiable() -> None:
    events = _version_1_log(9)
    # The key creation above already wrote a version 2 event; the migration runs on the
    # version 1 rows (the test database is migrated already, so run its step again here).
    migration.leaves_from_chain(apps, None)
    leaves = list(AuditLeaf.objects.order_by("leaf_index").values_list("event_id", flat=True))
    assert leaves == [e.sequence for e in events]
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.checkpoints_verified == 1 and report.head_sequence == 9
    append_events(3)
    head = audit_integrate().head
    assert head.tree_size == 9 + 1 + 3  # + the signing key's creation record
    report = audit_chain_check()
    assert report.ok and report.heads_verified == 1, report.problem


def test_editing_a_migrated_event_is_caught_by_the_chain_and_the_tree() -> None:
    _version_1_log(5)
    migration.leaves_from_chain(apps, None)
    audit_integrate()
    with raw_tampering() as cursor:
        cursor.execute("UPDATE audit_auditevent SET target_label = 'x' WHERE sequence = 3")
    report = audit_chain_check()
    assert not report.ok and report.broken_at == 3
