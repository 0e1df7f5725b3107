"""Key custodians manage clients and grants; auditors and administrators read them."""

from django.db import migrations

from accounts.role_grants import role_permissions_grant

READ = ["view_client", "view_grant", "view_delivery"]
ROLE_PERMISSIONS = {
    "key_custodian": [*READ, "add_client", "change_client", "add_grant", "change_grant"],
    "auditor": READ,
    "administrator": READ,
}


def grant(apps, schema_editor):
    role_permissions_grant(apps, "vault", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("vault", "0003_distribution"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
