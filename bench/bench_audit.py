"""Audit log at 100k and 1M events (quick: 10k): full-chain verification and the append rate
through the service, against hashlib; the auditor's event list against the same page at 10
events.

Filling: events are computed in Python with the project's own canonical form and hash
(``kmsportal.crypto.audit_chain``), chained from the current head, and inserted in bulk
(``executemany`` on SQLite, ``COPY`` on PostgreSQL); the head row is moved to the last one.
The chain is therefore exactly what the service would have written, only faster to make.

Verification: ``audit_chain_check()`` (the database's fast path, then the checkpoints) over the
whole log. Baseline: SHA-256 with hashlib over the very same canonical bytes, chained, in a
loop in this process: the floor any verifier pays. Target: at least 0.33x hashlib.

Append: ``audit_event_record`` in its own transaction per event (head lock, hash, insert,
head update, a signed checkpoint every 1000 events), with N events already in the table.

Pages: as for keys (bench_vault), signed in as an auditor through the sign-in form; each
page timed at 10 events and again at every size. Target: at most 2x.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench.bench_vault import _signed_in_client, page_rows, page_timer
from bench.harness import Row, analyze, measure

_BATCH = 20_000  # rows built and inserted at a time (a million at once would take gigabytes)

# Varied but valid events: (action, outcome); one in four is a failed sign-in (the filter).
_KINDS = [
    ("access.denied", "denied"),
    ("auth.sign_in", "success"),
    ("auth.sign_out", "success"),
    ("auth.sign_in_failed", "denied"),
]


def _head() -> tuple[int, str]:
    from audit.models import AuditChainHead

    head = AuditChainHead.objects.get(pk=1)
    return head.sequence, head.hash


def _insert(columns: list[str], rows: list[tuple[object, ...]]) -> None:
    """Insert audit rows as they are: ``COPY`` on PostgreSQL, ``executemany`` elsewhere."""
    from django.db import connection

    from audit.models import AuditEvent

    table = AuditEvent._meta.db_table
    names = ", ".join(columns)
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with (
            connection.connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join(["%s"] * len(columns))
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608


def _fill(count: int) -> list[bytes]:
    """Append ``count`` valid chained events after the current head, in bulk; returns their
    canonical bytes (for the hashlib baseline)."""
    from django.db import transaction

    if count <= 0:
        return []
    # One transaction: the rows and the head move together.
    with transaction.atomic():
        return _fill_rows(count)


def _fill_rows(count: int) -> list[bytes]:
    from django.db import connection

    from audit.models import AuditChainHead, AuditEvent
    from kmsportal.crypto.audit_chain import canonical_json, event_canonical_bytes, format_time

    sequence, previous = _head()
    start = datetime.now(UTC) - timedelta(days=30)
    columns = [field.column for field in AuditEvent._meta.concrete_fields]
    adapt_time = connection.ops.adapt_datetimefield_value
    sha256 = hashlib.sha256
    canonical_all: list[bytes] = []
    rows: list[tuple[object, ...]] = []
    for i in range(sequence + 1, sequence + count + 1):
        action, outcome = _KINDS[i % len(_KINDS)]
        moment = start + timedelta(microseconds=i * 1000)
        details = {"method": "GET", "path": f"/users/{i}/", "reason": "forbidden"}
        fields = {
            "sequence": i,
            "time": format_time(moment),
            "actor_type": "user",
            "actor_id": str(i % 50),
            "actor_name": f"user{i % 50}",
            "action": action,
            "target_type": "url",
            "target_id": "accounts:user_list",
            "target_label": f"/users/{i}/",
            "outcome": outcome,
            "source_ip": "192.0.2.10",
            "request_id": f"{i:032x}",
            "details": details,
        }
        canonical = event_canonical_bytes(fields)
        canonical_all.append(canonical)
        digest = sha256(bytes.fromhex(previous) + canonical).hexdigest()
        values = {
            **fields,
            "time": adapt_time(moment),
            "details": canonical_json(details).decode("utf-8"),
            "prev_hash": previous,
            "hash": digest,
        }
        rows.append(tuple(values[column] for column in columns))
        previous = digest
        if len(rows) == _BATCH:
            _insert(columns, rows)
            rows = []
    _insert(columns, rows)
    AuditChainHead.objects.filter(pk=1).update(sequence=sequence + count, hash=previous)
    return canonical_all


def _hashlib_chain(canonical: list[bytes]) -> Callable[[], int]:
    """The baseline: SHA-256 chained over the events' canonical bytes, nothing else."""

    def run() -> int:
        digest = bytes(32)
        for data in canonical:
            digest = hashlib.sha256(digest + data).digest()
        return len(canonical)

    return run


def run(*, quick: bool, database: str) -> list[Row]:
    from django.db import transaction

    from audit.models import AuditAction
    from audit.services import audit_chain_check, audit_event_record

    sizes = (10_000,) if quick else (100_000, 1_000_000)
    appends = 200 if quick else 500
    timed = page_timer(_signed_in_client(), "/audit/", repeats=9 if quick else 15)

    def pages() -> dict[str, tuple[float, float]]:
        return {
            "first page": timed({}),
            "action filter (1 in 4)": timed({"action": "auth.sign_in_failed"}),
            "an old page (keyset)": timed({"before": str(min(61, _head()[0] // 2 + 1))}),
        }

    _fill(10 - _head()[0])  # the sign-in above recorded a few; 10 in all
    small = pages()

    def verify() -> int:
        report = audit_chain_check()
        assert report.ok, report.problem
        # The fast path of the database, with nothing handed to the exact verifier.
        assert report.method != "exact" and report.fallbacks == 0, report
        return report.events_verified

    counter = iter(range(10**9))

    def append() -> int:
        for _ in range(appends):
            i = next(counter)
            with transaction.atomic():
                audit_event_record(
                    action=AuditAction.ACCESS_DENIED,
                    target_type="url",
                    target_label=f"/bench/{i}",
                    details={"i": i},
                )
        return appends

    rows: list[Row] = []
    canonical: list[bytes] = []
    for size in sizes:
        canonical += _fill(size - _head()[0])
        analyze()

        base, base_spread = measure(_hashlib_chain(canonical), repeats=3)
        ours, spread = measure(verify, repeats=3)
        big = pages()
        append_rate, append_spread = measure(append, repeats=3)
        label = f"{size // 1000:,}k" if size < 1_000_000 else f"{size // 1_000_000}M"
        rows += [
            Row(
                f"audit chain verification at {label} events (fast path + checkpoints)",
                ours,
                spread,
                "hashlib over the same canonical bytes, chained",
                base,
                base_spread,
                "events/s",
                database,
                target=">= 0.33",
            ),
            Row(
                f"audit append at {label} events (service, one transaction each)",
                append_rate,
                append_spread,
                "hashlib over the same canonical bytes, chained",
                base,
                base_spread,
                "events/s",
                database,
                note=f"{appends} appends per run; each includes a database commit",
            ),
            *page_rows(
                what="audit event",
                label=f"{label} events",
                small=small,
                big=big,
                small_label="10 events",
                database=database,
            ),
        ]
    return rows
