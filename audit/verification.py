"""Fast full-chain verification: the database builds the hashed text, Python only hashes.

The exact verifier (``verify_chain`` over ``audit.services.chain_rows``) turns every row into
Python objects and serialises it again, about 15 µs per event. Here the database renders each
event's canonical JSON (the bytes its hash covers, see kmsportal.crypto.audit_chain) itself:

SQLite
    One query per chunk of events builds every event's text with ``json_object()``, whose
    string escaping is byte for byte ``json.dumps(..., ensure_ascii=False)``, and returns the
    chunk's texts, ``prev_hash`` and ``hash`` columns as three long strings: Python splits one
    string and runs one SHA-256 per event, nothing else.
PostgreSQL
    Rows never travel to Python (sending them costs more than hashing them). One query
    recomputes ``encode(sha256(...), 'hex')`` for a whole range (on parallel workers when the
    planner sees the table's size) and returns only the first row that differs; a second compares the range's ``prev_hash`` column,
    concatenated in sequence order, with its ``hash`` column shifted by one row. Strings are
    pasted in unquoted when no value of the row holds a quote, backslash or control character
    (then that is exactly their JSON form) and go through ``to_json`` otherwise.

Anything the fast path does not accept (another hash, a broken link, a gap, an SQL error) is
decided by the exact verifier, started at the last event the fast path verified, so the verdict,
``broken_at`` and message are exactly those of a full exact walk. If the exact verifier finds the
events sound (their SQL text differs from Python's canonical JSON: a details value that is not
stored in canonical form, an exotic character), the walk goes on and the result counts a
fallback.

Why the fast path accepts nothing the exact one would refuse: the SQL text encodes the row
injectively. Every string column is JSON-quoted, or holds nothing JSON would escape; around the
details column every value is quoted, so the text splits into fields only one way; the time
text can only come out canonical from a stored time that reads back as that very instant. So
a text equal to the canonical JSON of the recorded event can only come from a row holding that
event (on SQLite ``json()`` drops whitespace from details, which does not change its value),
and a matching SHA-256 means the row hashes, under Python's canonical JSON, to its stored hash.
The one way the two can differ needs a forger who recomputes the stored hashes from the forged
row on (which passes any verification not covered by a signed checkpoint anyway): details
stored as valid but non-canonical JSON (keys out of order, say) are hashed here as stored and
re-serialised by the exact verifier. ``audit_chain_check(exact=True)`` (``verify_audit
--exact``) runs only the exact verifier and trusts nothing the database computes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, transaction

from kmsportal.crypto.audit_chain import ChainResult, verify_chain

from .models import AuditEvent

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
_SEPARATOR = "\x1e"  # between the texts of a chunk; JSON text never holds it unescaped


@dataclass(frozen=True)
class FastResult:
    """The chain verdict (as ``verify_chain`` would give it) and how it was reached."""

    chain: ChainResult
    method: str
    fallbacks: int  # ranges the exact verifier had to decide and found sound


def chain_check_fast(
    *, from_sequence: int, expected_prev_hash: str, to_sequence: int | None = None
) -> FastResult | None:
    """Verify the chain from ``from_sequence`` (to ``to_sequence``: the version 1 chain ends
    there) like ``verify_chain`` would; None if this database has no fast path.
    ``expected_prev_hash`` is the hash of the event before."""
    if connection.vendor == "sqlite":
        engine: _Engine = _SQLiteEngine()
    elif connection.vendor == "postgresql":
        engine = _PostgresEngine()
    else:
        return None
    walk = _Walk(from_sequence, expected_prev_hash, to_sequence)
    walk.run(engine)
    return FastResult(walk.result(), engine.method, walk.fallbacks)


# --------------------------------------------------------------------------- the walk


class _Anomaly(Exception):
    """Raised by an engine: the fast path cannot vouch for events up to ``bound``; the first
    suspect event, when known, is ``at``."""

    def __init__(self, bound: int, at: int | None = None) -> None:
        super().__init__(bound, at)
        self.bound = bound
        self.at = at


class _Walk:
    """Progress of one verification: the last verified event, counts, and the verdict."""

    def __init__(
        self, from_sequence: int, expected_prev_hash: str, to_sequence: int | None = None
    ) -> None:
        self.to_sequence = to_sequence
        self.from_sequence = from_sequence
        self.expected = expected_prev_hash
        self.first_sequence: int | None = None
        self.last_sequence: int | None = None
        self.last_hash = expected_prev_hash
        self.last_digest = bytes.fromhex(expected_prev_hash)
        self.verified = 0
        self.fallbacks = 0
        self.final: ChainResult | None = None  # set when the exact verifier had the last word
        self.table = connection.ops.quote_name(AuditEvent._meta.db_table)

    @property
    def next_sequence(self) -> int:
        return self.from_sequence if self.last_sequence is None else self.last_sequence + 1

    def advance(
        self, first: int, last: int, last_hash: str, last_digest: bytes | None = None
    ) -> None:
        """Events ``first``..``last``, following the last verified one, are verified."""
        if self.first_sequence is None:
            self.first_sequence = first
        self.verified += last - first + 1
        self.last_sequence = last
        self.last_hash = last_hash
        self.last_digest = bytes.fromhex(last_hash) if last_digest is None else last_digest

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return None if row is None else row[0]

    def run(self, engine: _Engine) -> None:
        while self.final is None:
            start = self.next_sequence
            # Events appended while we work are picked up by the next round.
            top = self._scalar(f"SELECT max(sequence) FROM {self.table}", [])  # noqa: S608
            if top is not None and self.to_sequence is not None:
                top = min(top, self.to_sequence)
            if top is None or top < start:
                return  # no event at or after start: the exact walk would end here too
            try:
                engine.verify(self, start, top)
            except _Anomaly as anomaly:
                self._decide(anomaly)

    def _decide(self, anomaly: _Anomaly) -> None:
        """Let the exact verifier judge the events after the last verified one."""
        if anomaly.at is not None and anomaly.at > self.next_sequence:
            # The events before the suspect one passed every fast check.
            before = self._scalar(
                f"SELECT hash FROM {self.table} WHERE sequence = %s",  # noqa: S608
                [anomaly.at - 1],
            )
            if before is not None:
                self.advance(self.next_sequence, anomaly.at - 1, before)
        # Reach at least the next event present, so that every round makes progress.
        following = self._scalar(
            f"SELECT min(sequence) FROM {self.table} WHERE sequence >= %s",  # noqa: S608
            [self.next_sequence],
        )
        bound: int | None = max(anomaly.at or anomaly.bound, following or 0)
        if self.to_sequence is not None:
            bound = min(bound, self.to_sequence)
        if self.last_sequence is None:
            start, expected, overlap = self.from_sequence, self.expected, 0
        else:
            # Start at the last verified event itself: the exact walk then meets the next one
            # in exactly the state a full exact walk would be in.
            start, overlap = self.last_sequence, 1
            expected = self._scalar(
                f"SELECT prev_hash FROM {self.table} WHERE sequence = %s",  # noqa: S608
                [start],
            )
            if expected is None:  # it vanished while we worked: judge everything exactly
                self.first_sequence, self.last_sequence, self.verified = None, None, 0
                start, expected, overlap = self.from_sequence, self.expected, 0
                bound = self.to_sequence
        from .services import chain_rows  # services imports this module

        result = verify_chain(
            chain_rows(from_sequence=start, to_sequence=bound), expected_prev_hash=expected
        )
        verified = self.verified - overlap + result.events_verified
        first = self.first_sequence if self.first_sequence is not None else result.first_sequence
        if not result.ok or bound is None:
            self.final = ChainResult(
                result.ok,
                verified,
                first,
                result.last_sequence,
                result.last_hash,
                result.broken_at,
                result.problem,
            )
            return
        self.fallbacks += 1
        if result.last_sequence is not None and result.last_hash is not None:
            self.first_sequence = first
            self.verified = verified
            self.last_sequence = result.last_sequence
            self.last_hash = result.last_hash
            self.last_digest = bytes.fromhex(result.last_hash)

    def result(self) -> ChainResult:
        if self.final is not None:
            return self.final
        return ChainResult(
            True,
            self.verified,
            self.first_sequence,
            self.last_sequence,
            None if self.last_sequence is None else self.last_hash,
            None,
            None,
        )


class _Engine:
    method = "exact"

    def verify(self, walk: _Walk, start: int, top: int) -> None:
        """Verify events ``start``..``top``, advancing ``walk``; raise ``_Anomaly`` otherwise."""
        raise NotImplementedError


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


class _SQLiteEngine(_Engine):
    method = "sqlite"
    chunk = 2048

    def __init__(self) -> None:
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        # One row per chunk: how many events (contiguous exactly when it is hi - lo + 1, the
        # sequence being an integer primary key), their texts, prev_hashes and hashes, in
        # rowid (sequence) order; any other order would show as broken links, never pass.
        self.sql = (
            "SELECT count(*), "  # noqa: S608 (no user input)
            f"CAST(group_concat({_sqlite_text()}, char(30)) AS BLOB), "
            "group_concat(prev_hash, ','), group_concat(hash, ',') "
            f"FROM {table} WHERE sequence BETWEEN ? AND ?"
        )

    def verify(self, walk: _Walk, start: int, top: int) -> None:
        connection.ensure_connection()
        cursor = connection.connection.cursor()  # the raw cursor: no per-row conversion
        try:
            for lo in range(start, top + 1, self.chunk):
                hi = min(lo + self.chunk - 1, top)
                try:
                    row = cursor.execute(self.sql, (lo, hi)).fetchone()
                except sqlite3.Error:  # e.g. details that are not JSON: no verdict here
                    raise _Anomaly(hi) from None
                if not self._chunk(walk, lo, hi, row):
                    raise _Anomaly(hi)
        finally:
            cursor.close()

    @staticmethod
    def _chunk(walk: _Walk, lo: int, hi: int, row: tuple[Any, ...]) -> bool:
        count, texts, prevs, hashes = row
        if count != hi - lo + 1 or not isinstance(texts, bytes):
            return False
        parts = texts.split(b"\x1e")
        if len(parts) != count:
            return False
        sha256 = hashlib.sha256
        digest = walk.last_digest
        digests = []
        append = digests.append
        for text in parts:
            digest = sha256(digest + text).digest()
            append(digest)
        # "h1,h2,...": equal strings mean every stored hash is its event's 64-digit hash (a
        # comma inside a stored value would add one), and every prev_hash the one before.
        computed = b"".join(digests).hex(",", 32)
        if hashes != computed or prevs != f"{walk.last_hash},{computed}"[:-65]:
            return False
        walk.advance(lo, hi, computed[-64:], digest)
        return True


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


class _PostgresEngine(_Engine):
    method = "postgresql"
    range_size = 250_000

    def __init__(self) -> None:
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        wrong = _postgres_hash_is_wrong()
        self.hashes_sql = (
            "SELECT count(*), min(sequence), max(sequence), "  # noqa: S608 (no user input)
            f"min(sequence) FILTER (WHERE {wrong}) "
            f"FROM {table} WHERE sequence BETWEEN %s AND %s"
        )
        # Every row passing the query above has a 64-character hash and prev_hash, so the
        # concatenations are equal exactly when each prev_hash is the previous row's hash.
        self.links_sql = (
            "SELECT coalesce(string_agg(prev_hash, '') = %s || "  # noqa: S608 (no user input)
            "left(string_agg(hash, ''), -64), "
            "false), right(string_agg(hash, ''), 64) "
            f"FROM (SELECT prev_hash, hash FROM {table} "
            "WHERE sequence BETWEEN %s AND %s ORDER BY sequence) AS ordered"
        )
        self.locate_sql = (
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

    def verify(self, walk: _Walk, start: int, top: int) -> None:
        self._fresh_statistics(top)
        lo = start
        while lo <= top:
            hi = min(lo + self.range_size - 1, top)
            self._range(walk, lo, hi)
            lo = hi + 1

    def _fresh_statistics(self, top: int) -> None:
        """ANALYZE the table when the planner believes it is much smaller than it is.

        Right after a bulk load, before autovacuum gets to it, the planner takes a 100,000-row
        range for a few dozen rows: it then sorts on disk instead of reading the primary key in
        order, and runs serially. ANALYZE samples a bounded number of rows and only updates
        statistics; without the privilege PostgreSQL skips it with a warning.
        """
        table = AuditEvent._meta.db_table
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
                row = cursor.fetchone()
                if row is not None and top >= 10_000 and row[0] < top / 2:
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
        except DatabaseError:
            pass  # only the speed depends on it

    def _range(self, walk: _Walk, lo: int, hi: int) -> None:
        try:
            # A savepoint: an SQL error (say a prev_hash that is not hex) must not end the
            # caller's transaction.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(self.hashes_sql, [lo, hi])
                count, first, last, first_wrong = cursor.fetchone()
                cursor.execute(self.links_sql, [walk.last_hash, lo, hi])
                linked, last_hash = cursor.fetchone()
        except DatabaseError:
            raise _Anomaly(hi) from None
        if (count, first, last, first_wrong, linked) == (hi - lo + 1, lo, hi, None, True):
            walk.advance(lo, hi, last_hash)
            return
        raise _Anomaly(hi, self._locate(walk, lo, hi))

    def _locate(self, walk: _Walk, lo: int, hi: int) -> int | None:
        """The first event from ``lo`` that fails a fast check, if an SQL query can say."""
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(self.locate_sql, [lo, hi, lo, walk.last_hash])
                row = cursor.fetchone()
        except DatabaseError:
            return None
        return None if row is None else row[0]


# --------------------------------------------------------------------------- the tree's leaves


@dataclass(frozen=True)
class LeafChunk:
    """Leaves ``lo``..``lo + len(digests) - 1`` as stored, and the indexes whose event text,
    rendered by the database, does not give the stored leaf hash (the caller decides those
    with the exact Python serialisation)."""

    lo: int
    digests: list[bytes]
    suspects: list[int]


def leaf_chunk_fast(lo: int, hi: int) -> LeafChunk | None:
    """Stored leaf hashes ``lo``..``hi`` checked against their events in bulk; None when this
    database has no fast path or the leaves are not contiguous there (the exact walk then
    finds and names the problem)."""
    if connection.vendor == "sqlite":
        return _sqlite_leaves(lo, hi)
    if connection.vendor == "postgresql":
        return _postgres_leaves(lo, hi)
    return None


def _tables() -> tuple[str, str]:
    from .models import AuditLeaf

    quote = connection.ops.quote_name
    return quote(AuditLeaf._meta.db_table), quote(AuditEvent._meta.db_table)


def _sqlite_leaves(lo: int, hi: int) -> LeafChunk | None:
    leaves, events = _tables()
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
        count, first, last, texts, stored_hex = cursor.execute(sql, (lo, hi)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        cursor.close()
    if count != hi - lo + 1 or (first, last) != (lo, hi) or not isinstance(texts, bytes):
        return None
    parts = texts.split(b"\x1e")
    stored = bytes.fromhex(stored_hex)
    if len(parts) != count or len(stored) != 32 * count:
        return None
    sha256 = hashlib.sha256
    computed = [sha256(b"\x00" + text).digest() for text in parts]
    digests = [stored[32 * i : 32 * i + 32] for i in range(count)]
    if b"".join(computed) == stored:
        return LeafChunk(lo, digests, [])
    suspects = [lo + i for i in range(count) if computed[i] != digests[i]]
    return LeafChunk(lo, digests, suspects)


def _postgres_leaves(lo: int, hi: int) -> LeafChunk | None:
    leaves, events = _tables()
    text = _postgres_event_text()
    wrong_sql = (
        f"SELECT l.leaf_index FROM {leaves} l JOIN {events} "  # noqa: S608 (no user input)
        f"ON {events}.sequence = l.event_id WHERE l.leaf_index BETWEEN %s AND %s AND "
        f"(\"time\" < '0001-01-01 00:00:00+00' OR "
        f"sha256('\\x00'::bytea || convert_to({text}, 'UTF8')) IS DISTINCT FROM l.leaf_hash) "
        "ORDER BY 1"
    )
    hashes_sql = (
        "SELECT count(*), min(leaf_index), max(leaf_index), "  # noqa: S608 (no user input)
        f"string_agg(leaf_hash, ''::bytea ORDER BY leaf_index) FROM {leaves} "
        "WHERE leaf_index BETWEEN %s AND %s"
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(hashes_sql, [lo, hi])
            count, first, last, stored = cursor.fetchone()
            if count != hi - lo + 1 or (first, last) != (lo, hi) or stored is None:
                return None
            stored = bytes(stored)
            if len(stored) != 32 * count:
                return None
            cursor.execute(wrong_sql, [lo, hi])
            suspects = [row[0] for row in cursor.fetchall()]
    except DatabaseError:
        return None
    digests = [stored[32 * i : 32 * i + 32] for i in range(count)]
    return LeafChunk(lo, digests, suspects)
