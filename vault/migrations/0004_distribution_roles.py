"""Key custodians manage clients and grants; auditors and administrators read them."""

from django.db import migrations

READ = ["view_client", "view_grant", "view_delivery"]
ROLE_PERMISSIONS = {
    "key_custodian": [*READ, "add_client", "change_client", "add_grant", "change_grant"],
    "auditor": READ,
    "administrator": READ,
}


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("vault")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        Group.objects.get(name=role).permissions.add(
            *Permission.objects.filter(content_type__app_label="vault", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [("vault", "0003_distribution"), ("accounts", "0001_roles")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
