"""Grant the PKI's permissions to the roles.

Administrators create and disable CAs and read everything; CA operators issue (and, with the
revocation issue, revoke) and read; auditors read everything (no page ever shows a private
key); key custodians get nothing of the PKI.
"""

from django.db import migrations

READ = ["view_certificateauthority", "view_certificate"]
ROLE_PERMISSIONS = {
    "administrator": [*READ, "manage_certificateauthority"],
    "ca_operator": [*READ, "issue_certificate", "revoke_certificate"],
    "auditor": READ,
}


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("pki")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        Group.objects.get(name=role).permissions.add(
            *Permission.objects.filter(content_type__app_label="pki", codename__in=codenames)
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        Group.objects.get(name=role).permissions.remove(
            *Permission.objects.filter(content_type__app_label="pki", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [("pki", "0001_initial"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, revoke)]
