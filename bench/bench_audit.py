"""Audit log: append rate through the service, and full-chain verification rate.

Baseline: SHA-256 with hashlib over the very same canonical bytes, chained, in a loop.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from bench.harness import Row, measure


def _fill(count: int) -> list[bytes]:
    """Bulk-insert `count` valid chained events (fast path for the benchmark only)."""
    from audit.models import AuditChainHead, AuditEvent
    from kmsportal.crypto.audit_chain import GENESIS_HASH, event_canonical_bytes, event_hash

    start = datetime(2026, 1, 1, tzinfo=UTC)
    previous = GENESIS_HASH
    batch: list[AuditEvent] = []
    canonical_all: list[bytes] = []
    for i in range(1, count + 1):
        event = AuditEvent(
            sequence=i,
            time=start + timedelta(microseconds=i * 1000),
            actor_type="user",
            actor_id=str(i % 50),
            actor_name=f"user{i % 50}",
            action="access.denied",
            target_type="url",
            target_id="accounts:user_list",
            target_label=f"/users/{i}/",
            outcome="denied",
            source_ip="192.0.2.10",
            request_id=f"{i:032x}",
            details={"method": "GET", "path": f"/users/{i}/", "reason": "forbidden"},
            prev_hash=previous,
        )
        canonical = event_canonical_bytes(event.chain_fields())
        canonical_all.append(canonical)
        event.hash = previous = event_hash(previous, canonical)
        batch.append(event)
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    AuditChainHead.objects.filter(pk=1).update(sequence=count, hash=previous)
    return canonical_all


def run(*, quick: bool, database: str) -> list[Row]:
    from django.db import transaction

    from audit.models import AuditAction
    from audit.services import audit_chain_check, audit_event_record

    size = 10_000 if quick else 100_000
    canonical = _fill(size)

    def hash_chain() -> int:
        sha256 = hashlib.sha256
        digest = bytes(32)
        for data in canonical:
            digest = sha256(digest + data).digest()
        return len(canonical)

    def verify() -> int:
        report = audit_chain_check()
        assert report.ok, report.problem
        # The fast path of the database, with nothing handed to the exact verifier.
        assert report.method != "exact" and report.fallbacks == 0, report
        return report.events_verified

    appends = 200 if quick else 1000

    def append() -> int:
        for i in range(appends):
            with transaction.atomic():
                audit_event_record(
                    action=AuditAction.ACCESS_DENIED,
                    target_type="url",
                    target_label=f"/bench/{i}",
                    details={"i": i},
                )
        return appends

    base, base_spread = measure(hash_chain, repeats=5)
    ours, spread = measure(verify, repeats=3)
    append_rate, append_spread = measure(append, repeats=3)
    label = f"{size // 1000}k"
    return [
        Row(
            f"audit chain verification, {label} events",
            ours,
            spread,
            "hashlib over the same canonical bytes",
            base,
            base_spread,
            "events/s",
            database,
        ),
        Row(
            f"audit append (service, one transaction each), at {label} events",
            append_rate,
            append_spread,
            "hashlib over the same canonical bytes",
            base,
            base_spread,
            "events/s",
            database,
            note="append includes a database commit per event",
        ),
    ]
