"""Audit log version 2: the chained events become the first leaves; triggers on every table.

1. PostgreSQL: a sequence numbers new events without a lock (SQLite takes max + 1 under its
   write lock, audit.services).
2. Every existing event becomes a leaf, 0, 1, 2, ... in sequence order, with its RFC 9162 leaf
   hash over the canonical entry
   (kmsportal.crypto.audit_log), and the perfect subtrees are stored. No head is signed here
   (a migration has no business unsealing keys): the sequencer's first run signs one covering
   them. Until then, and forever for that range, the old chain and its checkpoints still
   verify (`verify_audit` checks both).
3. Append-only triggers on every audit table, PostgreSQL (UPDATE, DELETE, TRUNCATE) and SQLite
   (UPDATE, DELETE). On SQLite they call `kmsportal_audit_maintenance()`, a function the
   application registers on each connection (audit.apps) that answers 0 except during the test
   suite's flush; a connection without it (a plain sqlite3 shell) gets "no such function", so
   it is refused too. SQLite has no privileges: whoever can write the file can drop triggers;
   there the triggers stop mistakes, the tree and its signed heads detect the rest.
   Caveat: a later migration that makes Django rebuild an audit table on SQLite drops its
   triggers; such a migration must call `create_triggers` again.
"""

from django.db import migrations

from kmsportal.crypto.audit_chain import EVENT_FIELDS, format_time
from kmsportal.crypto.audit_log import event_entry
from kmsportal.crypto.merkle import Frontier, leaf_hash

TABLES = [
    "audit_auditevent",
    "audit_auditcheckpoint",
    "audit_auditchainhead",
    "audit_auditsigningkey",
    "audit_auditmackey",
    "audit_auditleaf",
    "audit_audittreenode",
    "audit_audittreehead",
    "audit_auditrejectedevent",
]
# Sealed key tables: `manage.py rewrap` may re-seal the key under a newer master key, so an
# UPDATE that changes only the sealed column passes (a blob sealed for another row or key does
# not unseal: the AAD binds it to the row); nothing else may change.
SEALED = {
    "audit_auditsigningkey": ("sealed_private_key", ["id", "public_key_pem", "created_at"]),
    "audit_auditmackey": ("sealed_key", ["id", "created_at"]),
}
# Migration 0002 armed these two already on PostgreSQL.
PG_ARMED = {"audit_auditevent", "audit_auditcheckpoint"}

FIELDS = EVENT_FIELDS


def create_sequence(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "CREATE SEQUENCE IF NOT EXISTS audit_event_sequence AS bigint "
        "OWNED BY audit_auditevent.sequence"
    )
    schema_editor.execute(
        "SELECT setval('audit_event_sequence', "
        "coalesce((SELECT max(sequence) FROM audit_auditevent), 0) + 1, false)"
    )


def drop_sequence(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS audit_event_sequence")


def drop_empty_chain_head(apps, schema_editor):
    """A log without version 1 events has no chain: its head row (sequence 0) goes, so the
    audit tables hold no row that is not a record."""
    apps.get_model("audit", "AuditChainHead").objects.filter(sequence=0).delete()


def leaves_from_chain(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditLeaf = apps.get_model("audit", "AuditLeaf")
    AuditTreeNode = apps.get_model("audit", "AuditTreeNode")
    if AuditLeaf.objects.exists():
        return
    frontier = Frontier()
    last = 0
    while True:
        rows = list(
            AuditEvent.objects.filter(sequence__gt=last)
            .exclude(prev_hash="")  # chained (version 1) events only
            .order_by("sequence")
            .values_list(*FIELDS)[:5000]
        )
        if not rows:
            break
        leaves, nodes = [], []
        for row in rows:
            fields = dict(zip(FIELDS, row))
            fields["time"] = format_time(fields["time"])
            digest = leaf_hash(event_entry(fields))
            leaves.append(
                AuditLeaf(leaf_index=frontier.size, event_id=fields["sequence"], leaf_hash=digest)
            )
            for level, index, node in frontier.append(digest):
                nodes.append(AuditTreeNode(key=(level << 48) | index, hash=node))
        AuditLeaf.objects.bulk_create(leaves)
        AuditTreeNode.objects.bulk_create(nodes)
        last = rows[-1][0]




def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        # audit_refuse_change() is migration 0002's (superusers may flush in maintenance).
        for table in TABLES:
            if table in PG_ARMED:
                continue
            if table in SEALED:
                _, fixed = SEALED[table]
                old = ", ".join(f"OLD.{c}" for c in fixed)
                new = ", ".join(f"NEW.{c}" for c in fixed)
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_no_change BEFORE UPDATE ON {table} FOR EACH ROW "
                    f"WHEN (({old}) IS DISTINCT FROM ({new})) "
                    "EXECUTE FUNCTION audit_refuse_change()"
                )
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
                )
            else:
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
                )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
            )
    elif vendor == "sqlite":
        for table in TABLES:
            for operation in ("UPDATE", "DELETE"):
                event = operation
                if operation == "UPDATE" and table in SEALED:
                    event = "UPDATE OF " + ", ".join(SEALED[table][1])
                schema_editor.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} "
                    f"BEFORE {event} ON {table} "
                    "WHEN kmsportal_audit_maintenance() = 0 BEGIN "
                    f"SELECT RAISE(ABORT, 'the audit log is append-only: {operation} on "
                    f"{table} refused'); END"
                )


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "postgresql" and table not in PG_ARMED:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        elif vendor == "sqlite":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0005_tree_log"),
    ]

    operations = [
        migrations.RunPython(create_sequence, drop_sequence),
        migrations.RunPython(leaves_from_chain, migrations.RunPython.noop),
        migrations.RunPython(drop_empty_chain_head, migrations.RunPython.noop),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
