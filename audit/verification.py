"""Fast full-chain verification: the database builds the hashed text, Python only hashes.

The statements live in `audit.queries`; this module decides what their answers prove.

The exact verifier (``verify_chain`` over ``audit.checking.chain_rows``) turns every row into
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
from django.db.models import Max, Min

from kmsportal.crypto.audit_chain import ChainResult, verify_chain

from . import queries
from .models import AuditEvent


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

    @staticmethod
    def _column(sequence: int, column: str) -> str | None:
        """``column`` (hash or prev_hash) of event ``sequence``; None if there is none."""
        return AuditEvent.objects.filter(sequence=sequence).values_list(column, flat=True).first()

    def run(self, engine: _Engine) -> None:
        while self.final is None:
            start = self.next_sequence
            # Events appended while we work are picked up by the next round.
            top = AuditEvent.objects.aggregate(top=Max("sequence"))["top"]
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
            before = self._column(anomaly.at - 1, "hash")
            if before is not None:
                self.advance(self.next_sequence, anomaly.at - 1, before)
        # Reach at least the next event present, so that every round makes progress.
        following = AuditEvent.objects.filter(sequence__gte=self.next_sequence).aggregate(
            following=Min("sequence")
        )["following"]
        reach = max(anomaly.at or anomaly.bound, following or 0)
        bound: int | None = reach if self.to_sequence is None else min(reach, self.to_sequence)
        expected: str | None
        if self.last_sequence is None:
            start, expected, overlap = self.from_sequence, self.expected, 0
        else:
            # Start at the last verified event itself: the exact walk then meets the next one
            # in exactly the state a full exact walk would be in.
            start, overlap = self.last_sequence, 1
            expected = self._column(start, "prev_hash")
            if expected is None:  # it vanished while we worked: judge everything exactly
                self.first_sequence, self.last_sequence, self.verified = None, None, 0
                start, expected, overlap = self.from_sequence, self.expected, 0
                bound = self.to_sequence
        from .checking import chain_rows  # checking imports this module

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


class _SQLiteEngine(_Engine):
    method = "sqlite"
    chunk = 2048

    def verify(self, walk: _Walk, start: int, top: int) -> None:
        with queries.sqlite_chain_chunks() as chunk_row:
            for lo in range(start, top + 1, self.chunk):
                hi = min(lo + self.chunk - 1, top)
                try:
                    row = chunk_row(lo, hi)
                except sqlite3.Error:  # e.g. details that are not JSON: no verdict here
                    raise _Anomaly(hi) from None
                if not self._chunk(walk, lo, hi, row):
                    raise _Anomaly(hi)

    @staticmethod
    def _chunk(walk: _Walk, lo: int, hi: int, row: tuple[Any, ...]) -> bool:
        count, texts, prevs, hashes = row
        if count != hi - lo + 1 or not isinstance(texts, bytes):
            return False
        parts = texts.split(queries.SEPARATOR)
        if len(parts) != count:
            return False
        sha256 = hashlib.sha256
        digest = walk.last_digest
        digests: list[bytes] = []
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


class _PostgresEngine(_Engine):
    method = "postgresql"
    range_size = 250_000

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
        try:
            with transaction.atomic():
                queries.postgres_analyze_if_stale(top)
        except DatabaseError:
            pass  # only the speed depends on it

    def _range(self, walk: _Walk, lo: int, hi: int) -> None:
        try:
            # A savepoint: an SQL error (say a prev_hash that is not hex) must not end the
            # caller's transaction.
            with transaction.atomic():
                count, first, last, first_wrong, linked, last_hash = queries.postgres_chain_range(
                    lo, hi, walk.last_hash
                )
        except DatabaseError:
            raise _Anomaly(hi) from None
        if (count, first, last, first_wrong, linked) == (hi - lo + 1, lo, hi, None, True):
            walk.advance(lo, hi, last_hash)
            return
        raise _Anomaly(hi, self._locate(walk, lo, hi))

    def _locate(self, walk: _Walk, lo: int, hi: int) -> int | None:
        """The first event from ``lo`` that fails a fast check, if an SQL query can say."""
        try:
            with transaction.atomic():
                return queries.postgres_first_suspect(lo, hi, walk.last_hash)
        except DatabaseError:
            return None


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


def _sqlite_leaves(lo: int, hi: int) -> LeafChunk | None:
    try:
        count, first, last, texts, stored_hex = queries.sqlite_leaf_chunk(lo, hi)
    except sqlite3.Error:
        return None
    if count != hi - lo + 1 or (first, last) != (lo, hi) or not isinstance(texts, bytes):
        return None
    parts = texts.split(queries.SEPARATOR)
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
    try:
        with transaction.atomic():
            count, first, last, stored = queries.postgres_leaf_hashes(lo, hi)
            if count != hi - lo + 1 or (first, last) != (lo, hi) or stored is None:
                return None
            stored = bytes(stored)
            if len(stored) != 32 * count:
                return None
            suspects = queries.postgres_leaf_suspects(lo, hi)
    except DatabaseError:
        return None
    digests = [stored[32 * i : 32 * i + 32] for i in range(count)]
    return LeafChunk(lo, digests, suspects)
