"""Store audit event details as canonical JSON text instead of a database JSON type.

The text is exactly what the event hash covers (kmsportal.crypto.audit_chain), so the chain
check can hash rows as the database renders them (audit.verification); PostgreSQL's jsonb
reorders keys and adds spaces. The model still reads and writes a Python dict.

On PostgreSQL the column becomes `text` holding jsonb's rendering of rows written before this
migration: still the same JSON values, so the chain check hands those rows to the exact
verifier, which re-serialises them and finds them sound (only slower). ALTER TABLE rewrites
the table without firing the append-only row triggers of migration 0002.
"""

import audit.models
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="details",
            field=audit.models.CanonicalJSONField(blank=True, default=dict),
        ),
    ]
