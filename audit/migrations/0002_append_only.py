"""The chain head row, PostgreSQL triggers that make the log append-only, role grants.

On PostgreSQL, UPDATE, DELETE and TRUNCATE of audit events and checkpoints are refused by
triggers, whatever the application does. The only exception is a superuser session that
sets `kmsportal.audit_maintenance = 'on'` (the test suite's flush between tests): a
superuser can drop triggers anyway, so this grants nobody anything new.
"""

from django.db import migrations

from accounts.role_grants import role_permissions_grant

TABLES = ["audit_auditevent", "audit_auditcheckpoint"]

CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kmsportal.audit_maintenance', true) = 'on'
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTION, params=None)  # the body has literal % signs
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")


def create_head(apps, schema_editor):
    apps.get_model("audit", "AuditChainHead").objects.get_or_create(
        pk=1, defaults={"sequence": 0, "hash": "0" * 64}
    )


ROLE_PERMISSIONS = {
    "administrator": ["view_auditevent", "export_auditevent", "verify_auditevent", "view_auditcheckpoint"],
    "auditor": ["view_auditevent", "export_auditevent", "verify_auditevent", "view_auditcheckpoint"],
}


def grant_roles(apps, schema_editor):
    role_permissions_grant(apps, "audit", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("accounts", "0001_roles"),
    ]

    operations = [
        migrations.RunPython(create_head, migrations.RunPython.noop),
        migrations.RunPython(create_triggers, drop_triggers),
        migrations.RunPython(grant_roles, migrations.RunPython.noop),
    ]
