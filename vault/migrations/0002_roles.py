"""Grant the vault's permissions to the roles: custodians act, auditors and administrators read."""

from django.db import migrations

from accounts.role_grants import role_permissions_grant

READ = ["view_symmetrickey", "view_keyversion", "view_destructionrequest"]
ROLE_PERMISSIONS = {
    "key_custodian": [
        *READ,
        "add_symmetrickey",
        "rotate_symmetrickey",
        "suspend_symmetrickey",
        "compromise_symmetrickey",
        "destroy_symmetrickey",
    ],
    "auditor": READ,
    "administrator": READ,
}


def grant(apps, schema_editor):
    role_permissions_grant(apps, "vault", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("vault", "0001_initial"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
