"""The table of the `counters` cache (kmsportal.counters): created here, so `migrate` is the
only step a deployment runs; it exists also when CACHE_URL puts the counters in Redis."""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

TABLE = "kms_counters"


def create(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, False)


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_mfa")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
