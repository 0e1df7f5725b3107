"""The fast chain check (audit.verification) is used, and agrees with the exact Python one."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection

from audit import verification
from audit.models import AuditAction, AuditEvent
from audit.services import (
    VerificationReport,
    audit_chain_check,
    audit_checkpoint_create,
    audit_event_record,
)
from kmsportal.crypto.audit_chain import canonical_json, event_canonical_bytes
from tests.audit.helpers import append_events, raw_tampering

pytestmark = pytest.mark.django_db

FAST_METHOD = {"sqlite": "sqlite", "postgresql": "postgresql"}.get(connection.vendor, "exact")

# Everything JSON escapes (quote, backslash, every control character), what it must not
# escape (DEL, non-ASCII, U+2028/2029), and text shaped like the JSON around it.
TRICKY = [
    'quote " backslash \\ both \\" and \\\\',
    "controls " + "".join(chr(c) for c in range(1, 32)) + " end",
    "DEL \x7f",
    "accents é ü ñ, 日本語, Ελληνικά",
    "emoji 😀 🔐 and a lone combining mark \u0301",
    "separators \u2028 \u2029 and BOM \ufeff",
    '","outcome":"success","x":"',
    '{"looks": "like json"}',
    "trailing backslash \\",
    "",
]
if connection.vendor == "sqlite":  # PostgreSQL text cannot hold NUL at all
    TRICKY.append("nul \x00 inside")


def _record_tricky() -> None:
    for i, text in enumerate(TRICKY):
        audit_event_record(
            action=AuditAction.ACCESS_DENIED,
            actor_name=text or "x",
            target_type=text[:64],
            target_id=str(i),
            target_label=text,
            details={
                "text": text,
                "nested": [text, {"z": text, "a": None, "é": True}, [], {}],
                "numbers": [-5, 0, 10**20],
                text[:20]: "key made of the value",
            },
        )


def _same_verdict(fast: VerificationReport, exact: VerificationReport) -> None:
    assert (
        fast.ok,
        fast.events_verified,
        fast.checkpoints_verified,
        fast.head_sequence,
        fast.broken_at,
        fast.problem,
    ) == (
        exact.ok,
        exact.events_verified,
        exact.checkpoints_verified,
        exact.head_sequence,
        exact.broken_at,
        exact.problem,
    )
    assert exact.method == "exact"


@pytest.fixture(params=["large", "tiny"])
def chunks(request, monkeypatch) -> None:
    """Run each test with the real chunk sizes and with chunks of three events, so that
    anomalies fall at chunk borders and in chunks after the first."""
    if request.param == "tiny":
        monkeypatch.setattr(verification._SQLiteEngine, "chunk", 3)
        monkeypatch.setattr(verification._PostgresEngine, "range_size", 3)


def test_the_fast_path_is_used_and_never_reads_rows_into_python(chunks, monkeypatch) -> None:
    append_events(25)
    audit_checkpoint_create()

    def no_exact_walk(**kwargs):
        raise AssertionError("the fast path fell back to the exact verifier")

    monkeypatch.setattr("audit.services.chain_rows", no_exact_walk)
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.method == FAST_METHOD != "exact"
    assert report.fallbacks == 0
    assert report.events_verified == 27  # signing key creation and checkpoint events too
    assert report.checkpoints_verified == 1


def test_tricky_strings_verify_on_the_fast_path_without_fallback(chunks) -> None:
    append_events(2)
    _record_tricky()
    append_events(2)
    fast = audit_chain_check()
    assert fast.ok, fast.problem
    assert (fast.method, fast.fallbacks) == (FAST_METHOD, 0)
    _same_verdict(fast, audit_chain_check(exact=True))


def test_the_sql_text_is_pythons_canonical_json_byte_for_byte() -> None:
    _record_tricky()
    expression = verification.event_text_sql()
    if expression is None:
        pytest.skip("no fast path on this database")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT sequence, {expression} FROM audit_auditevent ORDER BY sequence")
        texts = dict(cursor.fetchall())
    events = AuditEvent.objects.order_by("sequence")
    assert len(texts) == len(TRICKY)
    for event in events:
        assert texts[event.sequence].encode() == event_canonical_bytes(event.chain_fields())


def test_details_are_stored_as_canonical_json_text() -> None:
    (event,) = append_events(1)
    details = {"z": [1, {"b": "é", "a": None}], "a": True}
    recorded = audit_event_record(action=AuditAction.ACCESS_DENIED, details=details)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT details FROM audit_auditevent WHERE sequence = %s", [recorded.sequence]
        )
        (stored,) = cursor.fetchone()
    assert stored == canonical_json(details).decode()
    assert AuditEvent.objects.get(sequence=recorded.sequence).details == details
    assert AuditEvent.objects.get(sequence=event.sequence).details == {"i": 0}


def test_a_whole_second_is_no_special_case(monkeypatch) -> None:
    # SQLite stores such a time without its fraction: '2026-01-01 12:00:00'.
    monkeypatch.setattr(
        "django.utils.timezone.now", lambda: datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    )
    append_events(3)
    report = audit_chain_check()
    assert report.ok, report.problem
    assert (report.method, report.fallbacks) == (FAST_METHOD, 0)


def test_an_equivalent_but_differently_stored_details_value_falls_back_and_passes(chunks) -> None:
    append_events(4)
    recorded = audit_event_record(action=AuditAction.ACCESS_DENIED, details={"a": 1, "b": 2})
    append_events(4)
    with raw_tampering() as cursor:
        # Same JSON value, keys in another order: the SQL text differs, the event does not.
        cursor.execute(
            "UPDATE audit_auditevent SET details = %s WHERE sequence = %s",
            ['{"b": 2, "a": 1}', recorded.sequence],
        )
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.method == FAST_METHOD
    assert report.fallbacks == (1 if FAST_METHOD != "exact" else 0)
    _same_verdict(report, audit_chain_check(exact=True))
    # After a fallback the fast path goes on, and still finds what is really broken.
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'forged' WHERE sequence = %s",
            [recorded.sequence + 2],
        )
    report = audit_chain_check()
    assert report.broken_at == recorded.sequence + 2
    _same_verdict(report, audit_chain_check(exact=True))


def _edit_label(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET target_label = 'forged' WHERE sequence = 6")


def _edit_details(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET details = '{\"i\": 99}' WHERE sequence = 3")


def _invalid_details(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET details = '{\"i\": ' WHERE sequence = 5")


def _details_not_an_object(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET details = '[4]' WHERE sequence = 5")


def _delete_first(cursor) -> None:
    cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 1")


def _delete_one(cursor) -> None:
    cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 4")


def _delete_many(cursor) -> None:
    cursor.execute("DELETE FROM audit_auditevent WHERE sequence BETWEEN 4 AND 11")


def _delete_tail(cursor) -> None:
    cursor.execute("DELETE FROM audit_auditevent WHERE sequence > 12")


def _swap(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET sequence = 1000 WHERE sequence = 3")
    cursor.execute("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = 4")
    cursor.execute("UPDATE audit_auditevent SET sequence = 4 WHERE sequence = 1000")


def _prev_hash_not_hex(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET prev_hash = %s WHERE sequence = 7", ["z" * 64])


def _prev_hash_short(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET prev_hash = 'ab' WHERE sequence = 7")


def _hash_upper_case(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET hash = upper(hash) WHERE sequence = 9")


def _hash_split_differently(cursor) -> None:
    # The concatenation of the two hashes is unchanged; each hash is not. (PostgreSQL
    # refuses a 65-character hash; SQLite does not check lengths.)
    if connection.vendor != "sqlite":
        _hash_upper_case(cursor)
        return
    cursor.execute("SELECT hash FROM audit_auditevent WHERE sequence IN (8, 9) ORDER BY sequence")
    (eight,), (nine,) = cursor.fetchall()
    cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE sequence = 8", [eight[:63]])
    cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE sequence = 9", [eight[63:] + nine])


def _time_moved(cursor) -> None:
    if connection.vendor == "postgresql":
        cursor.execute(
            "UPDATE audit_auditevent SET time = time + interval '1 microsecond' WHERE sequence = 8"
        )
    else:
        cursor.execute(
            "UPDATE audit_auditevent SET time = substr(time, 1, 19) || '.999999' WHERE sequence = 8"
        )


def _time_with_offset(cursor) -> None:
    if connection.vendor == "sqlite":  # the text must not be read past its canonical length
        cursor.execute("UPDATE audit_auditevent SET time = time || '+05:00' WHERE sequence = 8")
    else:
        cursor.execute(
            "UPDATE audit_auditevent SET time = time - interval '5 hours' WHERE sequence = 8"
        )


def _quote_smuggled(cursor) -> None:
    # A value that, pasted in unescaped, would read as the recorded one plus another field.
    cursor.execute(
        'UPDATE audit_auditevent SET target_label = target_label || \'","x":"\' WHERE sequence = 10'
    )


TAMPERING: list[Callable] = [
    _edit_label,
    _edit_details,
    _invalid_details,
    _details_not_an_object,
    _delete_first,
    _delete_one,
    _delete_many,
    _delete_tail,
    _swap,
    _prev_hash_not_hex,
    _prev_hash_short,
    _hash_upper_case,
    _hash_split_differently,
    _time_moved,
    _time_with_offset,
    _quote_smuggled,
]


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__.strip("_"))
def test_fast_and_exact_verdicts_are_identical_after_tampering(tamper, chunks) -> None:
    append_events(15)
    with raw_tampering() as cursor:
        tamper(cursor)
    fast = audit_chain_check()
    exact = audit_chain_check(exact=True)
    assert not exact.ok
    assert fast.method == FAST_METHOD
    _same_verdict(fast, exact)


def test_fast_and_exact_agree_from_a_later_sequence(chunks) -> None:
    append_events(12)
    for start in (1, 2, 5, 12, 13):
        _same_verdict(
            audit_chain_check(from_sequence=start),
            audit_chain_check(from_sequence=start, exact=True),
        )
    with raw_tampering() as cursor:
        _edit_label(cursor)
    for start in (5, 6, 7):
        fast = audit_chain_check(from_sequence=start)
        _same_verdict(fast, audit_chain_check(from_sequence=start, exact=True))
    assert audit_chain_check(from_sequence=6).broken_at == 6
    assert audit_chain_check(from_sequence=7).ok  # the edit is before the checked range


def test_verify_audit_exact_option() -> None:
    append_events(5)
    out = io.StringIO()
    call_command("verify_audit", "--exact", stdout=out)
    assert "OK: 5 events verified" in out.getvalue()
    event = AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED).get()
    assert event.details["ok"] is True
