"""Concurrent appenders on PostgreSQL keep the chain linear and gap-free."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connection, connections, transaction

from audit.models import AuditAction, AuditEvent
from audit.services import audit_chain_check, audit_event_record

THREADS = 8
APPENDS = 200


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_eight_writers_give_a_gap_free_valid_chain() -> None:
    start = AuditEvent.objects.count()
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            barrier.wait()
            for i in range(APPENDS):
                with transaction.atomic():
                    audit_event_record(
                        action=AuditAction.ACCESS_DENIED,
                        target_type="test",
                        target_id=f"{number}-{i}",
                        target_label=f"writer {number}",
                    )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    written = AuditEvent.objects.filter(target_type="test").count()
    assert written == THREADS * APPENDS
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    # Plus the signing key's creation at the automatic checkpoint at event 1,000.
    assert len(sequences) >= start + THREADS * APPENDS
    assert sequences == list(range(1, len(sequences) + 1))
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.checkpoints_verified >= 1
    assert report.events_verified == len(sequences)
    # Each writer's events interleave with the others': the writes really were concurrent.
    labels = list(AuditEvent.objects.order_by("sequence").values_list("target_label", flat=True))
    switches = sum(1 for a, b in itertools.pairwise(labels) if a != b)
    assert switches > THREADS
