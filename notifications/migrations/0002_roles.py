"""Grant the watcher permissions: CA operators and administrators manage expiry watchers."""

from django.db import migrations

from accounts.role_grants import role_permissions_grant, role_permissions_revoke

ROLE_PERMISSIONS = {
    "administrator": ["view_watcher", "manage_watcher"],
    "ca_operator": ["view_watcher", "manage_watcher"],
}


def grant(apps, schema_editor):
    role_permissions_grant(apps, "notifications", ROLE_PERMISSIONS)


def revoke(apps, schema_editor):
    role_permissions_revoke(apps, "notifications", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, revoke)]
