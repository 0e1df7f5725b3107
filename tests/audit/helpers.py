"""Helpers for audit tests: raw SQL tampering with the triggers switched off for one test."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from audit.models import AuditAction, AuditEvent
from audit.services import audit_event_record
from audit.triggers import sqlite_maintenance

# Every audit table, as the migration that arms their triggers lists them.
TABLES = tuple(importlib.import_module("audit.migrations.0006_tree_from_chain").TABLES)


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
    """A cursor for tampering as a database owner would: on PostgreSQL the append-only
    triggers are disabled inside the test's own transaction (DDL is transactional there, so
    the test's rollback re-arms them); on SQLite the triggers' function lets this thread by."""
    with connection.cursor() as cursor, sqlite_maintenance():
        if connection.vendor == "postgresql":
            # ALTER TABLE waits for no deferred constraint checks: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # as Django's constraints are
        yield cursor
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def make_audit_inserts_fail(cursor) -> None:  # type: ignore[no-untyped-def]
    """From now on (until the test's rollback) every INSERT of an audit event fails."""
    if connection.vendor == "postgresql":
        cursor.execute(
            "CREATE FUNCTION pg_temp.audit_insert_refused() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'audit insert refused (test)'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER audit_insert_refused BEFORE INSERT ON audit_auditevent "
            "FOR EACH ROW EXECUTE FUNCTION pg_temp.audit_insert_refused()"
        )
    else:
        cursor.execute(
            "CREATE TRIGGER audit_insert_refused BEFORE INSERT ON audit_auditevent "
            "BEGIN SELECT RAISE(ABORT, 'audit insert refused (test)'); END"
        )
