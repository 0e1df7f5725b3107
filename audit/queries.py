"""audit's raw SQL: the next event's number (see `next_event_number`), and the statements with
which the database renders and hashes events for the fast chain and tree checks.

`audit.verification` explains the method and why it accepts nothing the exact verifier would
refuse; this module holds the statements it runs. Each renders an event's canonical JSON (the
bytes its hash covers, see kmsportal.crypto.audit_chain) in SQL, which no ORM expression can
write. tests/audit/test_queries.py compares every query's answer with the ORM rows and Python's
canonical JSON of the same events, on SQLite and PostgreSQL.

Errors are the caller's to judge: SQLite statements raise ``sqlite3.Error``, PostgreSQL ones
``DatabaseError`` (the caller runs them in a savepoint).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from .models import AuditEvent, AuditLeaf, AuditMacKey

# The hashed fields in canonical (sorted) key order, as in kmsportal.crypto.audit_chain.
_STRING_FIELDS = (
    "action",
    "actor_id",
    "actor_name",
    "actor_type",
    "outcome",
    "request_id",
    "source_ip",
    "target_id",
    "target_label",
    "target_type",
)
_KEYS = (
    "action",
    "actor_id",
    "actor_name",
    "actor_type",
    "details",
    "outcome",
    "request_id",
    "sequence",
    "source_ip",
    "target_id",
    "target_label",
    "target_type",
    "time",
)
#: Between the texts of a chunk; JSON text never holds it unescaped.
SEPARATOR = b"\x1e"


def _events() -> str:
    return connection.ops.quote_name(AuditEvent._meta.db_table)


def _leaves() -> str:
    return connection.ops.quote_name(AuditLeaf._meta.db_table)


# --------------------------------------------------------------------------- SQLite


def _sqlite_text() -> str:
    """SQL for an event's canonical JSON text on SQLite."""
    values = []
    for key in _KEYS:
        if key == "details":
            value = "json(details)"  # minified, values as stored
        elif key == "time":
            # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC): only those two shapes can
            # give the canonical 'YYYY-MM-DDTHH:MM:SS.ffffffZ'; anything else stays visible.
            value = (
                "replace(\"time\", ' ', 'T') || "
                "CASE WHEN length(\"time\") = 19 THEN '.000000Z' ELSE 'Z' END"
            )
        else:
            value = connection.ops.quote_name(key)
        values.append(f"'{key}', {value}")
    return f"json_object({', '.join(values)})"


@functools.cache
def _sqlite_chunk_sql(vendor: str) -> str:
    # One row per chunk: how many events (contiguous exactly when it is hi - lo + 1, the
    # sequence being an integer primary key), their texts, prev_hashes and hashes, in
    # rowid (sequence) order; any other order would show as broken links, never pass.
    return (
        "SELECT count(*), "  # noqa: S608 (no user input)
        f"CAST(group_concat({_sqlite_text()}, char(30)) AS BLOB), "
        "group_concat(prev_hash, ','), group_concat(hash, ',') "
        f"FROM {_events()} WHERE sequence BETWEEN ? AND ?"
    )


@contextmanager
def sqlite_chain_chunks() -> Iterator[Callable[[int, int], tuple[Any, ...]]]:
    """A function of (lo, hi) giving the events ``lo``..``hi`` as one row: (count, their
    canonical texts joined by SEPARATOR as bytes, prev_hashes joined by ",", hashes joined
    by ","). On the raw SQLite cursor: no per-row conversion."""
    sql = _sqlite_chunk_sql(connection.vendor)
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    try:
        yield lambda lo, hi: cursor.execute(sql, (lo, hi)).fetchone()
    finally:
        cursor.close()


def sqlite_leaf_chunk(lo: int, hi: int) -> tuple[Any, ...]:
    """Leaves ``lo``..``hi`` with their events: (count, first leaf index, last leaf index,
    the events' canonical texts joined by SEPARATOR as bytes, the stored leaf hashes as one
    hex string), in leaf order."""
    leaves, events = _leaves(), _events()
    sql = (
        "SELECT count(*), min(leaf_index), max(leaf_index), "  # noqa: S608 (no user input)
        "CAST(group_concat(text, char(30)) AS BLOB), group_concat(hex(leaf_hash), '') FROM ("
        f"SELECT l.leaf_index, l.leaf_hash, {_sqlite_text()} AS text FROM {leaves} l "
        f"JOIN {events} ON {events}.sequence = l.event_id "
        "WHERE l.leaf_index BETWEEN ? AND ? ORDER BY l.leaf_index)"
    )
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    try:
        row: tuple[Any, ...] = cursor.execute(sql, (lo, hi)).fetchone()
        return row
    finally:
        cursor.close()


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_text(*, quoted: bool) -> str:
    """SQL for an event's canonical JSON text on PostgreSQL.

    ``quoted=False`` pastes strings in between quotes, which is their JSON form only when
    they hold no quote, backslash or control character (the caller checks)."""
    pieces = []
    for i, key in enumerate(_KEYS):
        lead = "{" if i == 0 else ","
        if key == "details":
            value = "details"
        elif key == "sequence":
            value = "sequence::text"
        elif key == "time":
            value = (
                "'\"' || to_char(\"time\" AT TIME ZONE 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') || \'"\''
            )
        elif quoted:
            value = f"to_json({connection.ops.quote_name(key)})::text"
        else:
            value = f"'\"' || {connection.ops.quote_name(key)} || '\"'"
        pieces.append(f"'{lead}\"{key}\":' || {value}")
    return " || ".join(pieces) + " || '}'"


def _postgres_event_text() -> str:
    """SQL for an event's canonical JSON text on PostgreSQL."""
    strings = " || ".join(connection.ops.quote_name(f) for f in _STRING_FIELDS)
    return (
        f"CASE WHEN ({strings}) ~ '[[:cntrl:]\"\\\\]' THEN {_postgres_text(quoted=True)} "
        f"ELSE {_postgres_text(quoted=False)} END"
    )


def _postgres_hash_is_wrong() -> str:
    """SQL that is true for a row whose hash does not match its prev_hash and content."""
    return (
        # Before year 1 to_char drops the era: such a time never comes from Python.
        "octet_length(prev_hash) <> 64 OR \"time\" < '0001-01-01 00:00:00+00' OR "
        f"encode(sha256(decode(prev_hash, 'hex') || convert_to({_postgres_event_text()}, "
        "'UTF8')), 'hex') IS DISTINCT FROM hash"
    )


def event_text_sql() -> str | None:
    """The SQL expression the fast path hashes, for tests and diagnostics (None: no fast path)."""
    if connection.vendor == "sqlite":
        return _sqlite_text()
    if connection.vendor == "postgresql":
        return _postgres_event_text()
    return None


@functools.cache
def _postgres_range_sql(vendor: str) -> tuple[str, str, str]:
    table, wrong = _events(), _postgres_hash_is_wrong()
    hashes = (
        "SELECT count(*), min(sequence), max(sequence), "  # noqa: S608 (no user input)
        f"min(sequence) FILTER (WHERE {wrong}) "
        f"FROM {table} WHERE sequence BETWEEN %s AND %s"
    )
    # Every row passing the query above has a 64-character hash and prev_hash, so the
    # concatenations are equal exactly when each prev_hash is the previous row's hash.
    links = (
        "SELECT coalesce(string_agg(prev_hash, '') = %s || "  # noqa: S608 (no user input)
        "left(string_agg(hash, ''), -64), "
        "false), right(string_agg(hash, ''), 64) "
        f"FROM (SELECT prev_hash, hash FROM {table} "
        "WHERE sequence BETWEEN %s AND %s ORDER BY sequence) AS ordered"
    )
    locate = (
        "SELECT sequence FROM ("  # noqa: S608 (no user input)
        "SELECT sequence, prev_hash, hash, "
        "lag(sequence) OVER w AS before_sequence, lag(hash) OVER w AS before_hash, "
        f"({wrong}) AS wrong "
        f"FROM {table} WHERE sequence BETWEEN %s AND %s "
        "WINDOW w AS (ORDER BY sequence)) AS rows "
        "WHERE wrong "
        "OR (before_sequence IS NULL AND (sequence <> %s OR prev_hash <> %s)) "
        "OR (before_sequence IS NOT NULL "
        "AND (sequence <> before_sequence + 1 OR prev_hash <> before_hash)) "
        "ORDER BY sequence LIMIT 1"
    )
    return hashes, links, locate


def postgres_chain_range(lo: int, hi: int, last_hash: str) -> tuple[Any, ...]:
    """Events ``lo``..``hi`` checked in the database: (count, first sequence, last sequence,
    first sequence whose hash is wrong or None, whether every prev_hash is the hash before
    it (the first one ``last_hash``), the last event's hash)."""
    hashes, links, _locate = _postgres_range_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(hashes, [lo, hi])
        count, first, last, first_wrong = cursor.fetchone()
        cursor.execute(links, [last_hash, lo, hi])
        linked, last_hash_here = cursor.fetchone()
    return count, first, last, first_wrong, linked, last_hash_here


def postgres_first_suspect(lo: int, hi: int, last_hash: str) -> int | None:
    """The first event from ``lo`` to ``hi`` that fails a fast check (wrong hash, a gap, a
    broken link, the first not following ``last_hash``), or None."""
    _hashes, _links, locate = _postgres_range_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(locate, [lo, hi, lo, last_hash])
        row = cursor.fetchone()
    return None if row is None else row[0]


def postgres_analyze_if_stale(top: int) -> None:
    """ANALYZE the events table when the planner believes it is much smaller than ``top``
    rows (see `audit.verification`); the caller runs it in a savepoint."""
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
        if row is not None and top >= 10_000 and row[0] < top / 2:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


def postgres_leaf_hashes(lo: int, hi: int) -> tuple[Any, ...]:
    """(count, first leaf index, last leaf index, the stored leaf hashes concatenated in
    leaf order) of leaves ``lo``..``hi``."""
    sql = (
        "SELECT count(*), min(leaf_index), max(leaf_index), "  # noqa: S608 (no user input)
        f"string_agg(leaf_hash, ''::bytea ORDER BY leaf_index) FROM {_leaves()} "
        "WHERE leaf_index BETWEEN %s AND %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [lo, hi])
        row: tuple[Any, ...] = cursor.fetchone()
        return row


def postgres_leaf_suspects(lo: int, hi: int) -> list[int]:
    """Indexes of leaves ``lo``..``hi`` whose event, rendered by the database, does not
    hash to the stored leaf hash."""
    leaves, events = _leaves(), _events()
    sql = (
        f"SELECT l.leaf_index FROM {leaves} l JOIN {events} "  # noqa: S608 (no user input)
        f"ON {events}.sequence = l.event_id WHERE l.leaf_index BETWEEN %s AND %s AND "
        f"(\"time\" < '0001-01-01 00:00:00+00' OR "
        f"sha256('\\x00'::bytea || convert_to({_postgres_event_text()}, 'UTF8')) "
        "IS DISTINCT FROM l.leaf_hash) ORDER BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [lo, hi])
        return [row[0] for row in cursor.fetchall()]


def next_event_number() -> tuple[int, str | None]:
    """A fresh event number and the id of the newest MAC key, in one round trip, without a
    lock held beyond this statement.

    PostgreSQL: the `audit_event_sequence` sequence (migration 0006): concurrent writers never
    wait on each other; numbers of rolled-back events are skipped. SQLite: max + 1, safe
    because every transaction there starts with the database's write lock (IMMEDIATE). The
    key id is read every time (not cached across transactions): a process never names a key
    row it has not seen committed. (Raw: a sequence is not the ORM's, and the two reads share
    one round trip on the event's hot path.)
    """
    events = connection.ops.quote_name(AuditEvent._meta.db_table)
    keys = connection.ops.quote_name(AuditMacKey._meta.db_table)
    newest_key = f"(SELECT id FROM {keys} ORDER BY created_at DESC LIMIT 1)"  # noqa: S608
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT nextval('audit_event_sequence'), {newest_key}")
        else:
            cursor.execute(
                f"SELECT coalesce(max(sequence), 0) + 1, {newest_key} FROM {events}"  # noqa: S608
            )
        number, key = cursor.fetchone()
    return int(number), None if key is None else str(uuid.UUID(str(key)))
