"""verify_audit checks leaves in bulk (the database renders each event's entry); the exact
Python serialisation decides only the leaves the bulk check cannot vouch for."""

from __future__ import annotations

import pytest

from audit import checking
from audit.checking import audit_chain_check
from audit.models import AuditAction
from audit.sequencer import audit_integrate
from audit.services import audit_event_record
from tests.audit.helpers import append_events, raw_tampering

pytestmark = pytest.mark.django_db

TRICKY = [
    'quote " and backslash \\ and slash /',
    "control \x01 \x1f tab\t newline\n",
    "unicode Zoë 😀 \u2028 \ufb01",
    "",
]


def _tricky() -> None:
    for i, text in enumerate(TRICKY):
        audit_event_record(
            action=AuditAction.ACCESS_DENIED,
            actor_name=text or "x",
            target_type="test",
            target_label=text,
            details={"text": text, "nested": [{"b": text, "a": i}], "😀": 1, "\ufb01": 2},
        )


def test_the_fast_path_vouches_for_every_leaf(monkeypatch) -> None:
    append_events(30)
    _tricky()
    append_events(3)
    audit_integrate()

    def exact_walk_forbidden(*args, **kwargs):
        raise AssertionError("the exact walk was needed")

    monkeypatch.setattr(checking, "_leaf_exact_row", exact_walk_forbidden)
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.tree_size >= 37


def test_a_tampered_leaf_is_decided_by_the_exact_serialisation(monkeypatch) -> None:
    events = append_events(20)
    audit_integrate()
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET details = %s WHERE sequence = %s",
            ['{"i": 7}', events[7].sequence],  # same value, other spelling: still sound
        )
    assert audit_chain_check().ok
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET details = %s WHERE sequence = %s",
            ['{"i":8}', events[7].sequence],
        )
    report = audit_chain_check()
    assert not report.ok and report.broken_at == events[7].sequence
