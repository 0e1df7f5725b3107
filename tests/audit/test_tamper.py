"""Every kind of tampering, done with raw SQL as a database owner without the master keyring
would, is found by the command that should find it (verify_audit; exports: test_export)."""

from __future__ import annotations

import base64
import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from audit.checking import audit_chain_check
from audit.models import AuditEvent, AuditLeaf, AuditSigningKey, AuditTreeHead
from audit.sequencer import AuditTreeError, audit_integrate
from audit.services import audit_keys_forget, audit_signing_key_ensure
from kmsportal.crypto.audit_chain import format_time, public_key_to_pem
from kmsportal.crypto.audit_log import event_entry, key_id, tree_head_sign
from kmsportal.crypto.merkle import leaf_hash
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


def _integrated(count: int = 10) -> list[AuditEvent]:
    events = append_events(count)
    audit_integrate()
    return events


def _assert_tampered(fragment: str) -> str:
    report = audit_chain_check()
    assert not report.ok
    assert fragment in report.problem, report.problem
    code, _, err = verify()
    assert code == 1
    assert "TAMPERED" in err
    return report.problem


def test_untouched_log_verifies_with_heads() -> None:
    _integrated(10)
    append_events(2)  # not yet integrated: checked by their MACs
    code, out, _ = verify()
    assert code == 0, out
    # The signing key's creation record was written while signing the first head.
    assert "tree of 10 leaves" in out and "3 events awaiting the sequencer" in out
    assert "1 signed tree heads" in out
    report = audit_chain_check()
    assert report.ok and report.pending >= 2 and report.heads_verified == 1


def test_edited_integrated_event_is_found() -> None:
    events = _integrated()
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = %s WHERE sequence = %s",
            ["forged", events[5].sequence],
        )
    problem = _assert_tampered("content altered")
    assert str(events[5].sequence) in problem


def test_edited_pending_event_is_found_by_its_mac() -> None:
    _integrated(3)
    (pending,) = append_events(1)
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET outcome = 'denied' WHERE sequence = %s",
            [pending.sequence],
        )
    _assert_tampered("no valid MAC")


def test_middle_delete_is_found() -> None:
    events = _integrated()
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditleaf WHERE event_id = %s", [events[4].sequence])
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = %s", [events[4].sequence])
    _assert_tampered("missing")


def test_reordered_leaves_are_found() -> None:
    events = _integrated()
    a, b = events[2].sequence, events[3].sequence
    with raw_tampering() as cursor:
        cursor.execute("UPDATE audit_auditleaf SET event_id = -1 WHERE event_id = %s", [a])
        cursor.execute("UPDATE audit_auditleaf SET event_id = %s WHERE event_id = %s", [a, b])
        cursor.execute("UPDATE audit_auditleaf SET event_id = %s WHERE event_id = -1", [b])
    _assert_tampered("content altered")


def test_tail_delete_with_head_removal_is_found_by_the_older_head() -> None:
    events = _integrated(5)
    append_events(5)
    audit_integrate()
    assert AuditTreeHead.objects.count() == 2
    keep = AuditLeaf.objects.get(event_id=events[-1].sequence).leaf_index
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_audittreehead WHERE tree_size > %s", [keep + 1])
        cursor.execute("DELETE FROM audit_audittreenode")
        cursor.execute("DELETE FROM audit_auditleaf WHERE leaf_index > %s", [keep])
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence > %s", [events[-1].sequence])
    # What the database still shows verifies: only a head saved outside it (an auditor's,
    # test_export) proves the truncation. But the remaining heads do not: see the next test.
    assert audit_chain_check().ok


def test_truncation_below_a_signed_head_is_found() -> None:
    _integrated(6)
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditleaf WHERE leaf_index >= 4")
    _assert_tampered("truncated")
    with pytest.raises(AuditTreeError):
        audit_integrate()  # the sequencer never signs over a changed tree


def test_forged_append_is_rejected_and_reported() -> None:
    events = _integrated(3)
    forged = {
        **events[0].chain_fields(),
        "sequence": events[-1].sequence + 100,
        "action": "key.destruction_approved",
        "actor_name": "mallory",
    }
    entry = event_entry(forged)
    with raw_tampering() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (sequence, time, actor_type, actor_id, actor_name, "
            "action, target_type, target_id, target_label, outcome, source_ip, request_id, "
            "details, prev_hash, hash, mac, mac_key_id) SELECT %s, time, actor_type, actor_id, "
            "%s, %s, target_type, target_id, target_label, outcome, source_ip, request_id, "
            "details, '', %s, %s, mac_key_id FROM audit_auditevent WHERE sequence = %s",
            [
                forged["sequence"],
                "mallory",
                "key.destruction_approved",
                leaf_hash(entry).hex(),
                "00" * 32,
                events[0].sequence,
            ],
        )
    _assert_tampered("no valid MAC")
    result = audit_integrate()
    assert result.rejected == 1
    assert not AuditLeaf.objects.filter(event_id=forged["sequence"]).exists()
    _assert_tampered("rejected by the sequencer")


def test_key_swap_with_resigned_heads_is_refused() -> None:
    _integrated(5)
    mallory = Ed25519PrivateKey.generate()
    head = AuditTreeHead.objects.get()
    forged = tree_head_sign(
        mallory,
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        timestamp=format_time(head.timestamp),
    )
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditsigningkey SET public_key_pem = %s",
            [public_key_to_pem(mallory.public_key())],
        )
        cursor.execute(
            "UPDATE audit_audittreehead SET signature = %s, key_id = %s",
            [forged.signature, key_id(mallory.public_key())],
        )
    audit_keys_forget()
    problem = _assert_tampered("trust anchor")
    assert "swapped" in problem


def test_a_key_not_pinned_in_settings_is_refused(settings) -> None:
    _integrated(3)
    other = Ed25519PrivateKey.generate().public_key()
    settings.KMS_AUDIT_PUBLIC_KEYS = [base64.b64encode(other.public_bytes_raw()).decode()]
    _assert_tampered("KMS_AUDIT_PUBLIC_KEYS")
    row, _ = audit_signing_key_ensure()
    settings.KMS_AUDIT_PUBLIC_KEYS = [row.public_key_pem]
    assert audit_chain_check().ok


def test_an_extra_signing_key_row_cannot_be_sealed_without_the_keyring() -> None:
    _integrated(3)
    mallory = Ed25519PrivateKey.generate()
    row = AuditSigningKey(
        public_key_pem=public_key_to_pem(mallory.public_key()), sealed_private_key=b"\x01" * 60
    )
    row.save()
    _assert_tampered("does not unseal")


def test_a_leaf_written_into_the_database_is_never_signed_over() -> None:
    events = _integrated(4)
    forged = append_events(1)[0]
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET actor_name = 'mallory', mac = %s WHERE sequence = %s",
            ["00" * 32, forged.sequence],
        )
        size = AuditLeaf.objects.count()
        cursor.execute(
            "INSERT INTO audit_auditleaf (leaf_index, event_id, leaf_hash) VALUES (%s, %s, %s)",
            [size, forged.sequence, bytes(32)],
        )
    with pytest.raises(AuditTreeError, match="beyond the latest signed head"):
        audit_integrate()
    assert not audit_chain_check().ok
    assert events
