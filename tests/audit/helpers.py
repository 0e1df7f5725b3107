"""Helpers for audit tests: raw SQL tampering with the triggers switched off for one test."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection

from audit.models import AuditAction, AuditEvent, AuditTreeHead
from audit.services import audit_event_record, audit_keys_forget
from audit.triggers import sqlite_maintenance
from kmsportal.crypto.audit_chain import format_time, public_key_to_pem
from kmsportal.crypto.audit_log import key_id, tree_head_sign

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


def resign_newest_head(private_key: Ed25519PrivateKey, *, swap_key_row: bool) -> None:
    """A database writer without the keyring re-signs the newest tree head with their own
    key; with ``swap_key_row`` they also put their public key into every signing key row
    (the key swap of issue 14, point 1)."""
    head = AuditTreeHead.objects.order_by("-tree_size").first()
    assert head is not None
    forged = tree_head_sign(
        private_key,
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        timestamp=format_time(head.timestamp),
    )
    with raw_tampering() as cursor:
        if swap_key_row:
            cursor.execute(
                "UPDATE audit_auditsigningkey SET public_key_pem = %s",
                [public_key_to_pem(private_key.public_key())],
            )
        cursor.execute(
            "UPDATE audit_audittreehead SET signature = %s, key_id = %s WHERE tree_size = %s",
            [forged.signature, key_id(private_key.public_key()), head.tree_size],
        )
    audit_keys_forget()
