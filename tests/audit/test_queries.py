"""audit's raw SQL (`audit.queries`) gives what the ORM rows and Python's canonical JSON give.

Each database renders events in its own SQL, so the SQLite queries run on SQLite and the
PostgreSQL ones on PostgreSQL (DATABASE_URL); both sets compare against the same ORM reads.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from django.db import connection
from django.db.models import Max

from audit import queries
from audit.checking import chain_rows
from audit.models import AuditEvent, AuditLeaf, AuditMacKey
from audit.sequencer import audit_integrate
from kmsportal.crypto.audit_chain import event_canonical_bytes
from kmsportal.crypto.audit_log import event_entry
from kmsportal.crypto.merkle import leaf_hash
from tests.audit.helpers import append_events, raw_tampering
from tests.audit.test_fast_tree import _tricky

pytestmark = pytest.mark.django_db
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's SQL")
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's SQL")


@pytest.fixture
def events() -> list[dict[str, Any]]:
    """Plain and tricky events (quotes, control characters, non-BMP text), integrated into
    the tree, as the exact verifier reads them."""
    append_events(5)
    _tricky()
    append_events(3)
    audit_integrate()
    return list(chain_rows())


def _same_events(texts: list[bytes], events: list[dict[str, Any]]) -> None:
    """The database's texts are the events' JSON: the same values, and the very canonical
    bytes where the stored details are canonical (key order aside, which SQLite keeps as
    stored: such events are left to the exact verifier, see audit.verification)."""
    assert [json.loads(t) for t in texts] == [json.loads(event_canonical_bytes(e)) for e in events]
    plain = [i for i, e in enumerate(events) if e["target_label"].startswith("evt-")]
    assert len(plain) == 8
    assert [texts[i] for i in plain] == [event_canonical_bytes(events[i]) for i in plain]


def _orm_chain(lo: int, hi: int) -> list[tuple[int, str, str]]:
    return list(
        AuditEvent.objects.filter(sequence__range=(lo, hi))
        .order_by("sequence")
        .values_list("sequence", "prev_hash", "hash")
    )


def _python_first_wrong(rows: list[tuple[int, str, str]], texts: dict[int, bytes]) -> int | None:
    for sequence, prev_hash, stored in rows:
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + texts[sequence]).hexdigest()
        if digest != stored:
            return sequence
    return None


@sqlite_only
def test_sqlite_chain_chunk_is_the_orm_and_canonical_json(events: list[dict[str, Any]]) -> None:
    lo, hi = events[0]["sequence"], events[-1]["sequence"]
    with queries.sqlite_chain_chunks() as chunk_row:
        count, texts, prevs, hashes = chunk_row(lo, hi)
    rows = _orm_chain(lo, hi)
    assert count == len(rows) == len(events)
    _same_events(texts.split(queries.SEPARATOR), events)
    assert prevs.split(",") == [prev for _s, prev, _h in rows]
    assert hashes.split(",") == [stored for _s, _p, stored in rows]


def _tricky_sequences() -> set[int]:
    return set(
        AuditEvent.objects.exclude(target_label__startswith="evt-").values_list(
            "sequence", flat=True
        )
    )


def _orm_leaves() -> list[tuple[int, bytes, int]]:
    return [
        (index, bytes(digest), event_id)
        for index, digest, event_id in AuditLeaf.objects.order_by("leaf_index").values_list(
            "leaf_index", "leaf_hash", "event_id"
        )
    ]


@sqlite_only
def test_sqlite_leaf_chunk_is_the_orm_and_canonical_json(events: list[dict[str, Any]]) -> None:
    leaves = _orm_leaves()
    lo, hi = leaves[0][0], leaves[-1][0]
    count, first, last, texts, stored_hex = queries.sqlite_leaf_chunk(lo, hi)
    by_sequence = {e["sequence"]: e for e in events}
    assert (count, first, last) == (len(leaves), lo, hi)
    assert bytes.fromhex(stored_hex) == b"".join(digest for _i, digest, _e in leaves)
    _same_events(texts.split(queries.SEPARATOR), [by_sequence[e] for _i, _d, e in leaves])


def _postgres_chain_matches_python(lo: int, hi: int) -> None:
    rows = _orm_chain(lo, hi)
    texts = {e["sequence"]: event_canonical_bytes(e) for e in chain_rows(from_sequence=lo)}
    first_prev = rows[0][1]
    linked = all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows)))
    first_wrong = _python_first_wrong(rows, texts)
    assert queries.postgres_chain_range(lo, hi, first_prev) == (
        len(rows),
        lo,
        hi,
        first_wrong,
        linked,
        rows[-1][2],
    )
    suspect = first_wrong if linked else None
    if suspect is not None or linked:
        assert queries.postgres_first_suspect(lo, hi, first_prev) == suspect
    assert queries.postgres_first_suspect(lo, hi, "0" * 64) == lo  # not after that hash


@postgres_only
def test_postgres_chain_range_is_the_orm_and_python_hashes(events: list[dict[str, Any]]) -> None:
    lo, hi = events[0]["sequence"], events[-1]["sequence"]
    _postgres_chain_matches_python(lo, hi)
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'forged' WHERE sequence = %s", [lo + 2]
        )
    _postgres_chain_matches_python(lo, hi)


@postgres_only
def test_postgres_leaves_are_the_orm_and_python_hashes(events: list[dict[str, Any]]) -> None:
    leaves = _orm_leaves()
    lo, hi = leaves[0][0], leaves[-1][0]
    count, first, last, stored = queries.postgres_leaf_hashes(lo, hi)
    assert (count, first, last) == (len(leaves), lo, hi)
    assert bytes(stored) == b"".join(digest for _i, digest, _e in leaves)
    by_sequence = {e["sequence"]: e for e in events}

    def python_suspects() -> list[int]:
        """The leaves whose event's entry, rendered by Python, is not what the leaf hashes:
        where the database renders other bytes (details not in canonical order, see
        audit.verification) the database names them too, and the exact walk decides."""
        return [
            index
            for index, digest, event in leaves
            if leaf_hash(event_entry(by_sequence[event])) != digest
        ]

    assert python_suspects() == []
    sound = queries.postgres_leaf_suspects(lo, hi)
    assert set(sound) <= {index for index, _d, event in leaves if event in _tricky_sequences()}
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'forged' WHERE sequence = %s",
            [leaves[1][2]],
        )
    assert queries.postgres_leaf_suspects(lo, hi) == sorted({leaves[1][0], *sound})


def test_next_event_number_follows_the_events_and_names_the_newest_key(
    events: list[dict[str, Any]],
) -> None:
    newest = AuditMacKey.objects.order_by("-created_at").values_list("pk", flat=True).first()
    top = AuditEvent.objects.aggregate(top=Max("sequence"))["top"]
    number, key = queries.next_event_number()
    assert key == str(newest)
    if connection.vendor == "sqlite":
        assert number == top + 1  # max + 1 under the database's write lock
    else:
        assert number > top  # the sequence: never reused, gaps where events rolled back
        assert queries.next_event_number()[0] > number
