"""Tests for kmsportal.crypto.audit_chain: canonical form, hash chain, checkpoints, exports.

Pure functions, no database: chains are built here from synthetic events with the module's
own functions, then tampered with the way an attacker with write access to the table (or to
an exported file) would.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsportal.crypto.audit_chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    ChainResult,
    canonical_json,
    checkpoint_payload,
    checkpoint_sign,
    checkpoint_verify,
    event_canonical_bytes,
    event_hash,
    export_checkpoint_line,
    export_event_line,
    export_header_line,
    export_public_key_line,
    format_time,
    public_key_from_pem,
    public_key_to_pem,
    verify_chain,
    verify_checkpoints,
    verify_export,
)

T0 = datetime(2026, 11, 28, 14, 42, 19, 123456, tzinfo=UTC)

# --- helpers --------------------------------------------------------------------------------


def make_event(sequence: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "sequence": sequence,
        "time": format_time(T0 + timedelta(seconds=sequence)),
        "actor_type": "user",
        "actor_id": str(sequence % 3),
        "actor_name": "Zoë Admin",
        "action": "key.rotate",
        "target_type": "symmetric_key",
        "target_id": f"key-{sequence}",
        "target_label": f"payments key {sequence}",
        "outcome": "success",
        "source_ip": "203.0.113.7",
        "request_id": f"req-{sequence}",
        "details": {"version": sequence, "reason": "scheduled"} if sequence % 2 else {},
    }
    event.update(overrides)
    return event


def link(events: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """(Re)compute prev_hash and hash from index `start` on: what an attacker re-chaining does."""
    prev = GENESIS_HASH if start == 0 else events[start - 1]["hash"]
    for event in events[start:]:
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(prev, event_canonical_bytes(event))
    return events


def make_chain(n: int) -> list[dict[str, Any]]:
    return link([make_event(seq) for seq in range(1, n + 1)])


def rehash_one(event: dict[str, Any]) -> None:
    """Recompute an event's own hash from its own prev_hash (hiding an edit locally)."""
    event["hash"] = event_hash(event["prev_hash"], event_canonical_bytes(event))


def make_checkpoints(
    events: list[dict[str, Any]], key: Ed25519PrivateKey, at: tuple[int, ...] = (10, 20, 30)
) -> list[dict[str, Any]]:
    by_sequence = {e["sequence"]: e for e in events}
    checkpoints = []
    previous_signature = ""
    for sequence in at:
        fields = {
            "sequence": sequence,
            "hash": by_sequence[sequence]["hash"],
            "time": format_time(T0 + timedelta(hours=sequence)),
            "previous_signature": previous_signature,
        }
        payload = checkpoint_payload(
            sequence=sequence,
            event_hash=fields["hash"],
            time=fields["time"],
            previous_signature=previous_signature,
        )
        fields["signature"] = previous_signature = checkpoint_sign(key, payload)
        checkpoints.append(fields)
    return checkpoints


def hashes_of(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["sequence"]: e["hash"] for e in events}


def export_lines(
    events: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    key: Ed25519PrivateKey,
    filters: dict[str, Any] | None = None,
) -> list[str]:
    return [
        export_header_line(exported_at=format_time(T0 + timedelta(days=1)), filters=filters or {}),
        *(export_event_line(e) for e in events),
        *(export_checkpoint_line(c) for c in checkpoints),
        export_public_key_line(key.public_key()),
    ]


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


# --- canonical form -------------------------------------------------------------------------


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}}) == (
        b'{"a":{"c":null,"d":[1,2]},"b":1}'
    )


def test_canonical_json_writes_utf8_not_escapes() -> None:
    assert canonical_json({"name": "Zoë"}) == b'{"name":"Zo\xc3\xab"}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1.5, -0.0])
def test_canonical_json_refuses_floats_nan_and_infinity(value: float) -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": value})


def test_format_time_is_utc_with_microseconds_and_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2026, 11, 28, 15, 42, 19, 123456, tzinfo=paris)) == (
        "2026-11-28T14:42:19.123456Z"
    )
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_format_time_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 11, 28, 14, 42, 19))


def test_event_canonical_bytes_ignores_other_keys() -> None:
    event = make_event(5)
    extended = {**event, "prev_hash": "1" * 64, "hash": "2" * 64, "id": 99}
    assert event_canonical_bytes(extended) == event_canonical_bytes(event)
    assert json.loads(event_canonical_bytes(extended)).keys() == set(EVENT_FIELDS)


def test_event_canonical_bytes_names_a_missing_field() -> None:
    event = make_event(5)
    del event["target_label"]
    with pytest.raises(KeyError, match="target_label"):
        event_canonical_bytes(event)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"target_label": 'say "hi"'},
        {"target_label": "back\\slash"},
        {"target_label": "new\nline\ttab\x00nul\x1funit"},
        {"actor_name": "Zoë \u2028 line separator, 🔑 emoji, \x7f del"},
        {"actor_id": None},
        {"sequence": True},
        {"details": {"z": [1, 25, None, True], "a": {"é": "x", "b": 'q"uote'}}},
        {"details": {"nested": [{"b": 1, "a": 2}], "big": 10**30}},
        {"details": ["not", "an", "object"]},
        {"details": "a string"},
    ],
)
def test_event_canonical_bytes_equals_canonical_json_of_the_fields(
    overrides: dict[str, Any],
) -> None:
    event = {**make_event(7), **overrides}
    fields = {f: event[f] for f in EVENT_FIELDS}
    assert event_canonical_bytes(event) == canonical_json(fields) == version_1_bytes(fields)


def test_event_canonical_bytes_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError):
        event_canonical_bytes(make_event(1, time=T0))  # a datetime, not format_time(...)
    for bad in (float("nan"), 2.5):
        with pytest.raises(TypeError):
            event_canonical_bytes(make_event(1, details={"x": bad}))
    with pytest.raises(TypeError):
        event_canonical_bytes(make_event(1, sequence=7.0))


def version_1_bytes(value: Any) -> bytes:
    """The canonical form the version 1 chain was hashed with (before RFC 8785 was shared)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# Text as stored: any Unicode scalar value (surrogates cannot be UTF-8, in either form).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
# Keys without characters beyond U+FFFF: only there do code point and UTF-16 order differ.
_keys = st.text(st.characters(exclude_categories=["Cs"], max_codepoint=0xFFFF), max_size=8)
_details = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=16,
)
_events = st.fixed_dictionaries(
    {
        "sequence": st.integers(min_value=1),
        "details": st.dictionaries(_keys, _details, max_size=5),
        **{f: _text for f in EVENT_FIELDS if f not in ("sequence", "details")},
    }
)


@settings(max_examples=500, deadline=None)
@given(_events)
def test_event_bytes_equal_the_version_1_form(event: dict[str, Any]) -> None:
    # Stored version 1 hashes were computed over version_1_bytes; RFC 8785 gives the same bytes
    # for every event of this domain (integers of any size, any text, nested details).
    assert event_canonical_bytes(event) == version_1_bytes(event)


def test_the_one_difference_from_the_version_1_form_is_utf16_key_order() -> None:
    # Keys that differ first at a character beyond U+FFFF against one in U+E000..U+FFFF:
    # version 1 sorted them by code point, RFC 8785 by UTF-16 unit. No event key is such.
    details = {"\U0001f511": 1, "\ufb01": 2}
    assert canonical_json(details) == '{"\U0001f511":1,"\ufb01":2}'.encode()  # D83D < FB01
    assert version_1_bytes(details) == '{"\ufb01":2,"\U0001f511":1}'.encode()  # FB01 < 1F511


def test_event_hash_known_answer_plain_event() -> None:
    event = {
        "sequence": 42,
        "time": "2026-11-28T14:42:19.123456Z",
        "actor_type": "user",
        "actor_id": "7",
        "actor_name": "Zoë Auditor",
        "action": "key.rotate",
        "target_type": "symmetric_key",
        "target_id": "3f1c",
        "target_label": "payments-prod",
        "outcome": "success",
        "source_ip": "203.0.113.9",
        "request_id": "req-1",
        "details": {"version": 2, "reason": "scheduled", "tags": ["a", "b"]},
    }
    # Written out by hand: sorted keys, no spaces, "ë" as the UTF-8 bytes C3 AB.
    expected_json = (
        b'{"action":"key.rotate","actor_id":"7","actor_name":"Zo\xc3\xab Auditor",'
        b'"actor_type":"user","details":{"reason":"scheduled","tags":["a","b"],"version":2},'
        b'"outcome":"success","request_id":"req-1","sequence":42,"source_ip":"203.0.113.9",'
        b'"target_id":"3f1c","target_label":"payments-prod","target_type":"symmetric_key",'
        b'"time":"2026-11-28T14:42:19.123456Z"}'
    )
    expected = hashlib.sha256(bytes(32) + expected_json).hexdigest()
    assert expected == "6ec8c9448ba33e829d154fa27c44a44ec620fc04a718d73880fd5d2135df24c6"
    assert event_canonical_bytes(event) == expected_json
    assert event_hash(GENESIS_HASH, event_canonical_bytes(event)) == expected


def test_event_hash_known_answer_with_escapes() -> None:
    event = {
        "sequence": 1,
        "time": "2026-01-02T03:04:05.000006Z",
        "actor_type": "system",
        "actor_id": "",
        "actor_name": "system",
        "action": "key.create",
        "target_type": "key",
        "target_id": "9",
        "target_label": 'say "hi"\n\\ok',
        "outcome": "denied",
        "source_ip": "",
        "request_id": "req-2",
        "details": {},
    }
    expected_json = (
        b'{"action":"key.create","actor_id":"","actor_name":"system","actor_type":"system",'
        b'"details":{},"outcome":"denied","request_id":"req-2","sequence":1,"source_ip":"",'
        b'"target_id":"9","target_label":"say \\"hi\\"\\n\\\\ok","target_type":"key",'
        b'"time":"2026-01-02T03:04:05.000006Z"}'
    )
    prev = "ab" * 32
    expected = hashlib.sha256(bytes.fromhex(prev) + expected_json).hexdigest()
    assert expected == "5f35a92c55a317d89276101aacd421d2f047688853a5888604d554ed6737551c"
    assert event_canonical_bytes(event) == expected_json
    assert event_hash(prev, event_canonical_bytes(event)) == expected


@pytest.mark.parametrize("prev", ["AB" * 32, "ab" * 31, "zz" * 32, ""])
def test_event_hash_requires_lowercase_hex_prev_hash(prev: str) -> None:
    with pytest.raises(ValueError):
        event_hash(prev, b"{}")


# --- verify_chain ---------------------------------------------------------------------------


def test_verify_chain_accepts_an_intact_chain() -> None:
    events = make_chain(50)
    result = verify_chain(events, expected_prev_hash=GENESIS_HASH)
    assert result == ChainResult(
        ok=True,
        events_verified=50,
        first_sequence=1,
        last_sequence=50,
        last_hash=events[-1]["hash"],
        broken_at=None,
        problem=None,
    )


def test_verify_chain_result_is_frozen() -> None:
    result = verify_chain(make_chain(2))
    with pytest.raises(AttributeError):
        result.ok = False  # type: ignore[misc]


def test_verify_chain_of_nothing_is_ok() -> None:
    assert verify_chain([]) == ChainResult(True, 0, None, None, None, None, None)


def test_verify_chain_resumes_from_a_previous_batch() -> None:
    events = make_chain(30)
    first = verify_chain(events[:12], expected_prev_hash=GENESIS_HASH)
    second = verify_chain(events[12:], expected_prev_hash=first.last_hash)
    assert first.ok and second.ok
    assert (second.first_sequence, second.last_sequence, second.events_verified) == (13, 30, 18)


def test_content_edit_is_detected_at_that_event() -> None:
    events = make_chain(20)
    events[11]["target_label"] = "someone else's key"
    result = verify_chain(events)
    assert not result.ok
    assert result.broken_at == 12
    assert result.events_verified == 11
    assert (result.last_sequence, result.last_hash) == (11, events[10]["hash"])
    assert "event 12: stored hash" in result.problem
    assert "(content altered)" in result.problem


def test_details_edit_is_detected() -> None:
    events = make_chain(20)
    events[4]["details"] = {**events[4]["details"], "reason": "compromise"}
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 5)


def test_deleted_middle_row_is_a_sequence_gap() -> None:
    events = make_chain(20)
    del events[9]  # sequence 10
    result = verify_chain(events)
    assert (result.ok, result.broken_at, result.events_verified) == (False, 11, 9)
    assert result.problem == "event 11 follows event 9: sequence gap (event 10 deleted?)"


def test_deleted_rows_renumbered_break_the_link() -> None:
    events = make_chain(20)
    del events[9]
    for event in events[9:]:
        event["sequence"] -= 1
        rehash_one(event)  # own hashes recomputed, links left as they were
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 10)
    assert "prev_hash does not match hash of event 9" in result.problem


def test_inserted_row_with_recomputed_hash_breaks_the_next_link() -> None:
    events = make_chain(20)
    forged = make_event(5, action="key.export", target_label="exfiltrated")
    forged["prev_hash"] = events[3]["hash"]  # links correctly to event 4...
    rehash_one(forged)  # ...and carries a correct hash of its own
    for event in events[4:]:  # the attacker shifts the later rows to make room
        event["sequence"] += 1
        rehash_one(event)
    events.insert(4, forged)
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 6)
    assert result.problem == (
        "event 6: prev_hash does not match hash of event 5 (row inserted, deleted or reordered)"
    )


def test_reordered_rows_are_detected() -> None:
    events = make_chain(20)
    events[6], events[7] = events[7], events[6]  # sequences 7 and 8 swapped in place
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 8)
    assert "event 8 follows event 6" in result.problem


def test_reordered_rows_renumbered_are_detected() -> None:
    events = make_chain(20)
    events[6], events[7] = events[7], events[6]
    events[6]["sequence"], events[7]["sequence"] = 7, 8
    rehash_one(events[6])
    rehash_one(events[7])
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 7)
    assert "prev_hash does not match hash of event 6" in result.problem


def test_duplicated_row_is_detected() -> None:
    events = make_chain(10)
    events.insert(5, copy.deepcopy(events[4]))
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 5)
    assert "sequence not increasing" in result.problem


def test_prev_hash_edit_is_detected() -> None:
    events = make_chain(20)
    events[14]["prev_hash"] = "f" * 64
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 15)
    assert "prev_hash does not match hash of event 14" in result.problem


def test_stored_hash_edit_is_detected() -> None:
    events = make_chain(20)
    events[14]["hash"] = "f" * 64
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 15)
    assert "stored hash ffff" in result.problem


def test_expected_prev_hash_catches_a_truncated_head() -> None:
    events = make_chain(20)
    result = verify_chain(events[5:], expected_prev_hash=GENESIS_HASH)
    assert (result.ok, result.broken_at, result.first_sequence) == (False, 6, 6)
    assert "does not match the expected" in result.problem


def test_without_expected_prev_hash_the_first_link_is_trusted() -> None:
    result = verify_chain(make_chain(20)[5:])
    assert (result.ok, result.first_sequence, result.events_verified) == (True, 6, 15)


def test_boolean_sequence_is_not_accepted_as_one() -> None:
    events = make_chain(3)
    events[0]["sequence"] = True  # == 1 in Python, but not what the server hashed
    assert not verify_chain(events).ok


def test_missing_field_is_a_problem_not_a_crash() -> None:
    events = make_chain(5)
    del events[2]["details"]
    result = verify_chain(events)
    assert (result.ok, result.broken_at) == (False, 3)
    assert "details" in result.problem


def test_verify_chain_streams_and_stops_at_the_first_break() -> None:
    events = make_chain(100)
    events[9]["outcome"] = "denied"
    consumed = 0

    def stream() -> Iterator[dict[str, Any]]:
        nonlocal consumed
        for event in events:
            consumed += 1
            yield event

    result = verify_chain(stream())
    assert result.broken_at == 10
    assert consumed == 10


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_sign_and_verify_round_trip(key: Ed25519PrivateKey) -> None:
    payload = checkpoint_payload(sequence=10, event_hash="a" * 64, time="t", previous_signature="")
    assert (
        payload == b'{"hash":"' + b"a" * 64 + b'","previous_signature":"","sequence":10,"time":"t"}'
    )
    signature = checkpoint_sign(key, payload)
    assert checkpoint_verify(key.public_key(), payload, signature)
    assert not checkpoint_verify(key.public_key(), payload + b" ", signature)
    assert not checkpoint_verify(key.public_key(), payload, "not base64!")
    assert not checkpoint_verify(key.public_key(), payload, signature + "\n")  # non-canonical


def test_public_key_pem_round_trip(key: Ed25519PrivateKey) -> None:
    pem = public_key_to_pem(key.public_key())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_from_pem(pem).public_bytes_raw() == key.public_key().public_bytes_raw()


def test_public_key_from_pem_refuses_other_keys_and_garbage() -> None:
    ec_pem = public_key_to_pem(ec.generate_private_key(ec.SECP256R1()).public_key())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Ed25519"):
        public_key_from_pem(ec_pem)
    with pytest.raises(ValueError, match="PEM"):
        public_key_from_pem("hello")


def test_verify_checkpoints_accepts_valid_ones(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    result = verify_checkpoints(
        make_checkpoints(events, key),
        key.public_key(),
        event_hashes=hashes_of(events),
        expected_first_previous_signature="",
        last_event_sequence=30,
    )
    assert (result.ok, result.checkpoints_verified, result.broken_at, result.problem) == (
        True,
        3,
        None,
        None,
    )


def test_verify_checkpoints_takes_a_lookup_function(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    known = hashes_of(events)
    result = verify_checkpoints(
        make_checkpoints(events, key), key.public_key(), event_hashes=known.get
    )
    assert result.ok


def test_forged_checkpoint_signature_is_detected(
    key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    checkpoints[1]["signature"] = make_checkpoints(events, other_key)[1]["signature"]
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes=hashes_of(events))
    assert (result.ok, result.checkpoints_verified, result.broken_at) == (False, 1, 20)
    assert "signature does not verify" in result.problem


def test_edited_checkpoint_field_fails_its_signature(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    checkpoints[2]["time"] = format_time(T0)
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes={})
    assert (result.ok, result.broken_at) == (False, 30)


def test_removed_checkpoint_breaks_the_previous_signature_chain(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    del checkpoints[1]
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes=hashes_of(events))
    assert (result.ok, result.checkpoints_verified, result.broken_at) == (False, 1, 30)
    assert "previous_signature does not match the signature of the checkpoint at 10" in (
        result.problem
    )


def test_first_previous_signature_checked_when_expected(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)[1:]
    assert verify_checkpoints(checkpoints, key.public_key(), event_hashes={}).ok
    result = verify_checkpoints(
        checkpoints, key.public_key(), event_hashes={}, expected_first_previous_signature=""
    )
    assert (result.ok, result.broken_at) == (False, 20)


def test_checkpoint_sequence_must_increase(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key, at=(20, 10))  # validly signed, wrong order
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes=hashes_of(events))
    assert (result.ok, result.broken_at) == (False, 10)
    assert "not increasing" in result.problem


def test_checkpoint_hash_mismatch_after_rechaining(key: Ed25519PrivateKey) -> None:
    # The attacker edits event 15 and re-chains everything after it: the chain verifies,
    # but the signed checkpoint at 20 still holds the original hash.
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    original = events[19]["hash"]
    events[14]["outcome"] = "denied"
    link(events, start=14)
    assert verify_chain(events).ok
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes=hashes_of(events))
    assert (result.ok, result.checkpoints_verified, result.broken_at) == (False, 1, 20)
    assert result.problem == (
        f"checkpoint at 20 signs hash {original} but event 20 has hash {events[19]['hash']}"
    )


def test_truncated_tail_after_a_checkpoint_is_detected(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    del events[25:]  # the last five events deleted; the checkpoint at 30 remains
    assert verify_chain(events).ok
    result = verify_checkpoints(
        checkpoints, key.public_key(), event_hashes=hashes_of(events), last_event_sequence=25
    )
    assert (result.ok, result.checkpoints_verified, result.broken_at) == (False, 2, 30)
    assert result.problem == "checkpoint signs event 30 but the log ends at 25 (tail truncated)"


def test_checkpoint_missing_a_field(key: Ed25519PrivateKey) -> None:
    checkpoints = make_checkpoints(make_chain(30), key)
    del checkpoints[0]["signature"]
    result = verify_checkpoints(checkpoints, key.public_key(), event_hashes={})
    assert not result.ok
    assert "signature" in result.problem


# --- verify_export --------------------------------------------------------------------------


def good_export(key: Ed25519PrivateKey, n: int = 30) -> list[str]:
    events = make_chain(n)
    return export_lines(events, make_checkpoints(events, key), key)


def edit_line(lines: list[str], index: int, **changes: Any) -> None:
    obj = json.loads(lines[index])
    obj.update(changes)
    lines[index] = json.dumps(obj)


def test_verify_export_accepts_a_good_export(key: Ed25519PrivateKey) -> None:
    result = verify_export(good_export(key))
    assert (result.ok, result.events_verified, result.checkpoints_verified) == (True, 30, 3)
    assert (result.problem, result.line_number) == (None, None)


def test_verify_export_reads_a_text_stream(key: Ed25519PrivateKey, tmp_path: Any) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(good_export(key)) + "\n\n", encoding="utf-8")
    with path.open(encoding="utf-8") as handle:
        assert verify_export(handle).ok


def test_verify_export_accepts_other_key_order_and_spacing(key: Ed25519PrivateKey) -> None:
    lines = [
        json.dumps(dict(reversed(json.loads(line).items())), indent=None)
        for line in good_export(key)
    ]
    assert verify_export(lines).ok


def test_trusted_public_key_is_accepted(key: Ed25519PrivateKey) -> None:
    pem = public_key_to_pem(key.public_key())
    assert verify_export(good_export(key), trusted_public_key_pem=pem).ok


def test_wrong_trusted_public_key_is_reported(
    key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    lines = good_export(key)
    result = verify_export(lines, trusted_public_key_pem=public_key_to_pem(other_key.public_key()))
    assert (result.ok, result.line_number) == (False, len(lines))
    assert "not the trusted public key" in result.problem


def test_invalid_trusted_public_key_raises(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError):
        verify_export(good_export(key), trusted_public_key_pem="not a key")


def test_modified_target_label_is_detected_with_its_line(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    edit_line(lines, 8, target_label="harmless key")  # line 9 holds event 8
    result = verify_export(lines)
    assert (result.ok, result.line_number, result.events_verified) == (False, 9, 7)
    assert result.problem.startswith("event 8: stored hash")
    assert result.problem.endswith("(content altered)")


def test_modified_details_is_detected_with_its_line(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    edit_line(lines, 13, details={"version": 1, "reason": "routine"})
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 14)


def test_self_consistent_edit_is_caught_by_the_next_link(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    obj = json.loads(lines[8])
    obj["target_label"] = "harmless key"
    rehash_one(obj)
    lines[8] = json.dumps(obj)
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 10)
    assert "prev_hash does not match hash of event 8" in result.problem


def test_rechained_export_is_caught_by_the_checkpoint(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    checkpoints = make_checkpoints(events, key)
    events[14]["outcome"] = "denied"
    link(events, start=14)
    lines = export_lines(events, checkpoints, key)
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 1 + 30 + 2)  # the checkpoint at 20
    assert "checkpoint at 20 signs hash" in result.problem


def test_deleted_line_in_a_complete_export_is_a_gap(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    del lines[5]  # event 5
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 6)
    assert result.problem == "event 6 follows event 4: sequence gap (event 5 deleted?)"


def test_filtered_export_may_skip_sequences(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    kept = [e for e in events if e["sequence"] % 3 == 0 or 9 <= e["sequence"] <= 12]
    lines = export_lines(kept, make_checkpoints(events, key), key, filters={"actor_id": "0"})
    result = verify_export(lines)
    assert (result.ok, result.events_verified, result.checkpoints_verified) == (True, 12, 3)


def test_reordered_lines_are_detected(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    lines[4], lines[5] = lines[5], lines[4]  # events 4 and 5 on lines 5 and 6
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 5)
    assert result.problem == "event 5 follows event 3: sequence gap (event 4 deleted?)"


def test_reordered_lines_in_a_filtered_export_are_detected(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    lines = export_lines(events, make_checkpoints(events, key), key, filters={"outcome": "x"})
    lines[4], lines[5] = lines[5], lines[4]
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 6)
    assert "event 4 follows event 5: sequence not increasing" in result.problem


def test_truncated_tail_in_a_complete_export_is_detected(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    lines = export_lines(events[:27], make_checkpoints(events, key), key)
    result = verify_export(lines)
    assert (result.ok, result.checkpoints_verified, result.line_number) == (False, 2, 1 + 27 + 3)
    assert result.problem == "checkpoint signs event 30 but the log ends at 27 (tail truncated)"


def test_truncated_head_in_a_complete_export_is_detected(key: Ed25519PrivateKey) -> None:
    events = make_chain(30)
    lines = export_lines(events[3:], make_checkpoints(events, key), key)
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 2)
    assert "genesis" in result.problem


def test_forged_checkpoint_in_export_names_its_line(
    key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    lines = good_export(key)
    index = 1 + 30 + 1  # the checkpoint at 20
    edit_line(lines, index, signature=make_checkpoints(make_chain(30), other_key)[1]["signature"])
    result = verify_export(lines)
    assert (result.ok, result.line_number, result.checkpoints_verified) == (False, index + 1, 1)


def test_removed_checkpoint_line_is_detected(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    del lines[1 + 30 + 1]
    result = verify_export(lines)
    assert not result.ok
    assert "previous_signature" in result.problem


def test_malformed_json_line_is_reported_with_its_number(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    lines[3] = lines[3][:-5]
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 4)
    assert result.problem.startswith("malformed JSON")


def test_unknown_line_type_is_reported(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    lines.insert(3, '{"type":"comment","text":"nothing to see"}')
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 4)
    assert "unknown line type" in result.problem


def test_extra_key_in_an_event_line_is_refused(key: Ed25519PrivateKey) -> None:
    # An unhashed key would let anyone annotate a signed event undetected.
    lines = good_export(key)
    edit_line(lines, 3, approved_by="CISO")
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 4)
    assert "unexpected approved_by" in result.problem


def test_duplicate_key_in_a_line_is_refused(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    lines[3] = lines[3][:-1] + ',"target_label":"a second label"}'
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, 4)
    assert "duplicate key 'target_label'" in result.problem


def test_missing_public_key_line_is_reported(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)[:-1]
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, len(lines))
    assert "public_key" in result.problem


def test_header_must_come_first(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    result = verify_export(lines[1:])
    assert (result.ok, result.line_number) == (False, 1)
    assert "header" in result.problem
    assert verify_export([]).problem == "the export is empty: no header line"


def test_lines_after_the_public_key_are_refused(key: Ed25519PrivateKey) -> None:
    lines = good_export(key)
    lines.append(lines[5])
    result = verify_export(lines)
    assert (result.ok, result.line_number) == (False, len(lines))


def test_export_line_helpers_produce_canonical_json(key: Ed25519PrivateKey) -> None:
    event = make_chain(1)[0]
    line = export_event_line(event)
    assert line.encode() == canonical_json({**event, "type": "event"})
    assert json.loads(export_header_line(exported_at="t", filters={})) == {
        "type": "header",
        "format": "kmsportal-audit-export",
        "version": 1,
        "exported_at": "t",
        "filters": {},
    }
    assert json.loads(export_public_key_line(key.public_key()))["algorithm"] == "ed25519"
