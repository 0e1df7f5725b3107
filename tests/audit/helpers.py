"""Helpers for audit tests: raw SQL tampering with the triggers switched off for one test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from audit.models import AuditAction, AuditEvent
from audit.services import audit_event_record

TABLES = ("audit_auditevent", "audit_auditcheckpoint", "audit_auditchainhead")


def append_events(count: int, *, label: str = "evt") -> list[AuditEvent]:
    return [
        audit_event_record(
            action=AuditAction.ACCESS_DENIED,
            target_type="test",
            target_id=str(i),
            target_label=f"{label}-{i}",
            details={"i": i},
        )
        for i in range(count)
    ]


@contextmanager
def raw_tampering() -> Iterator[object]:
    """A cursor for tampering; on PostgreSQL the append-only triggers are disabled inside the
    test's own transaction (DDL is transactional there, so the test's rollback re-arms them)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # ALTER TABLE waits for no deferred constraint checks: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in TABLES[:2]:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        yield cursor
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in TABLES[:2]:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
