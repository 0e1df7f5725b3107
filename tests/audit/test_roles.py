"""The production two-role setup (docs/audit-log.md): the serving role can only INSERT and
SELECT the audit tables; it cannot update, delete, truncate, or switch the triggers off."""

from __future__ import annotations

import io

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from tests.audit.helpers import TABLES, append_events

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="roles are PostgreSQL's"),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _grant_serving_role(role: str) -> None:
    """The grants docs/audit-log.md gives (the owner runs migrations; this role serves)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT LIKE 'audit\\_%%'"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
        for table in TABLES:
            cursor.execute(f"GRANT SELECT, INSERT ON {table} TO {role}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")


def test_the_serving_role_can_append_but_not_rewrite() -> None:
    role = f"{connection.settings_dict['NAME']}_serving"[:60]
    _grant_serving_role(role)
    try:
        append_events(3)
        params = {**connection.get_connection_params(), "user": role}
        params.pop("password", None)
        with psycopg.connect(**params, autocommit=True) as conn:
            # Appending works through the application as this role.
            assert conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0] >= 3
            conn.execute("SELECT nextval('audit_event_sequence')")
            for sql in (
                "UPDATE audit_auditevent SET target_label = 'x'",
                "DELETE FROM audit_auditevent",
                "TRUNCATE audit_auditevent",
                "DELETE FROM audit_audittreehead",
                "UPDATE audit_auditsigningkey SET public_key_pem = 'x'",
                "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
                "ALTER TABLE audit_auditleaf DISABLE TRIGGER ALL",
                "DROP TRIGGER audit_auditevent_no_change ON audit_auditevent",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
            # The maintenance switch the test suite uses is honoured for superusers only.
            conn.execute("SET kmsportal.audit_maintenance = 'on'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM audit_auditleaf")
        # And the whole application runs as it: record, integrate, verify.
        owner = connection.settings_dict["USER"]
        connection.close()
        connection.settings_dict["USER"] = role
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                assert cursor.fetchone()[0] == role
            append_events(2)
            call_command("audit_head", stdout=io.StringIO())
            call_command("verify_audit", stdout=io.StringIO())
            assert AuditEvent.objects.count() >= 5
        finally:
            connection.close()
            connection.settings_dict["USER"] = owner
    finally:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
