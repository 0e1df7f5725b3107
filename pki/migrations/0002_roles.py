"""Grant the PKI's permissions to the roles.

Administrators create and disable CAs and read everything; CA operators issue (and, with the
revocation issue, revoke) and read; auditors read everything (no page ever shows a private
key); key custodians get nothing of the PKI.
"""

from django.db import migrations

from accounts.role_grants import role_permissions_grant, role_permissions_revoke

READ = ["view_certificateauthority", "view_certificate"]
ROLE_PERMISSIONS = {
    "administrator": [*READ, "manage_certificateauthority"],
    "ca_operator": [*READ, "issue_certificate", "revoke_certificate"],
    "auditor": READ,
}


def grant(apps, schema_editor):
    role_permissions_grant(apps, "pki", ROLE_PERMISSIONS)


def revoke(apps, schema_editor):
    role_permissions_revoke(apps, "pki", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("pki", "0001_initial"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, revoke)]
