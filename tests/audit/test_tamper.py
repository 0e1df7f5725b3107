"""Every kind of tampering, done with raw SQL, is found at the right sequence number."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from audit.services import audit_chain_check, audit_checkpoint_create
from tests.audit.helpers import append_events, raw_tampering

pytestmark = pytest.mark.django_db


def verify() -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, out.getvalue(), err.getvalue()


def test_untouched_chain_verifies() -> None:
    append_events(10)
    code, out, _ = verify()
    assert code == 0
    assert "OK: 10 events verified" in out
    # The verification is itself audited (event 11).
    assert AuditEvent.objects.filter(action="audit.verified").count() == 1


def test_edited_row_is_found() -> None:
    append_events(10)
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = %s WHERE sequence = %s", ["forged", 6]
        )
    report = audit_chain_check()
    assert not report.ok
    assert report.broken_at == 6
    assert "hash" in report.problem
    code, _, err = verify()
    assert code == 1
    assert "first broken link at event 6" in err


def test_edited_details_are_found() -> None:
    append_events(5)
    with raw_tampering() as cursor:
        column = "details"
        value = '{"i": 99}'
        cursor.execute(f"UPDATE audit_auditevent SET {column} = %s WHERE sequence = 3", [value])
    assert audit_chain_check().broken_at == 3


def test_deleted_row_is_found() -> None:
    append_events(10)
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 4")
    report = audit_chain_check()
    assert report.broken_at == 5
    assert "gap" in report.problem or "4" in report.problem


def test_reordered_rows_are_found() -> None:
    append_events(10)
    columns = "target_id, target_label, details, prev_hash, hash"
    with raw_tampering() as cursor:
        cursor.execute(f"SELECT {columns} FROM audit_auditevent WHERE sequence = 3")
        three = cursor.fetchone()
        cursor.execute(f"SELECT {columns} FROM audit_auditevent WHERE sequence = 4")
        four = cursor.fetchone()
        assignments = ", ".join(f"{c.strip()} = %s" for c in columns.split(","))
        # Swap through a placeholder hash: the hash column is unique.
        cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE sequence = 3", ["f" * 64])
        cursor.execute(f"UPDATE audit_auditevent SET {assignments} WHERE sequence = 4", list(three))
        cursor.execute(f"UPDATE audit_auditevent SET {assignments} WHERE sequence = 3", list(four))
    assert audit_chain_check().broken_at == 3


def test_inserted_row_is_found() -> None:
    """An attacker shifts events 5..8 up by one and slips a self-consistent forgery in at 5."""
    from kmsportal.crypto.audit_chain import event_canonical_bytes, event_hash

    events = append_events(8)
    with raw_tampering() as cursor:
        for seq in range(8, 4, -1):
            cursor.execute(
                "UPDATE audit_auditevent SET sequence = sequence + 1 WHERE sequence = %s", [seq]
            )
        forged = AuditEvent(
            sequence=5,
            time=events[4].time,
            actor_type="system",
            actor_id="",
            actor_name="system",
            action="access.denied",
            target_type="test",
            target_id="x",
            target_label="forged",
            outcome="success",
            source_ip="",
            request_id="",
            details={},
            prev_hash=events[3].hash,
        )
        forged.hash = event_hash(forged.prev_hash, event_canonical_bytes(forged.chain_fields()))
        cursor.execute(
            "INSERT INTO audit_auditevent (sequence, time, actor_type, actor_id, actor_name, "
            "action, target_type, target_id, target_label, outcome, source_ip, request_id, "
            "details, prev_hash, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [
                5,
                forged.time,
                "system",
                "",
                "system",
                "access.denied",
                "test",
                "x",
                "forged",
                "success",
                "",
                "",
                "{}",
                forged.prev_hash,
                forged.hash,
            ],
        )
        cursor.execute("UPDATE audit_auditchainhead SET sequence = 9")
    report = audit_chain_check()
    assert not report.ok
    assert report.broken_at == 6  # the forgery links to 4; the shifted original 5 does not


def test_truncated_tail_after_checkpoint_is_found() -> None:
    append_events(10)
    checkpoint = audit_checkpoint_create()  # signs event 10; records event 11
    assert checkpoint.sequence == 10
    with raw_tampering() as cursor:
        cursor.execute("SELECT hash FROM audit_auditevent WHERE sequence = 7")
        (hash7,) = cursor.fetchone()
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence > 7")
        # A careful attacker also rewinds the chain head.
        cursor.execute("UPDATE audit_auditchainhead SET sequence = 7, hash = %s", [hash7])
    report = audit_chain_check()
    assert not report.ok
    assert report.broken_at == 10
    assert "truncated" in report.problem


def test_truncated_tail_without_rewinding_head_is_found() -> None:
    append_events(10)
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence > 8")
    report = audit_chain_check()
    assert report.broken_at == 9
    assert "tail truncated" in report.problem


def test_forged_checkpoint_signature_is_found() -> None:
    append_events(4)
    audit_checkpoint_create()
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditcheckpoint SET signature = %s WHERE sequence = 4", ["A" * 88]
        )
    report = audit_chain_check()
    assert not report.ok and report.broken_at == 4


def test_rewritten_history_is_caught_by_the_checkpoint() -> None:
    """Edit an event and recompute every later hash: only the signed checkpoint catches it."""
    from kmsportal.crypto.audit_chain import event_canonical_bytes, event_hash

    append_events(6)
    audit_checkpoint_create()  # at 6
    with raw_tampering() as cursor:
        previous = AuditEvent.objects.get(sequence=2).hash
        last = AuditEvent.objects.order_by("-sequence").first().sequence
        for seq in range(3, last + 1):
            event = AuditEvent.objects.get(sequence=seq)
            if seq == 3:
                event.target_label = "rewritten"
            fields = event.chain_fields()
            new_hash = event_hash(previous, event_canonical_bytes(fields))
            cursor.execute(
                "UPDATE audit_auditevent SET target_label = %s, prev_hash = %s, hash = %s "
                "WHERE sequence = %s",
                [event.target_label, previous, new_hash, seq],
            )
            previous = new_hash
        cursor.execute("UPDATE audit_auditchainhead SET hash = %s", [previous])
    report = audit_chain_check()
    assert not report.ok
    assert report.broken_at == 6
    assert "checkpoint" in report.problem


def test_verify_from_sequence() -> None:
    append_events(10)
    out = io.StringIO()
    call_command("verify_audit", "--from", "5", stdout=out)
    assert "OK: 6 events verified (from 5 to 10)" in out.getvalue()
