"""Granting an app's permissions to the role groups, for the apps' data migrations.

Permissions are normally created after all migrations (post_migrate); a migration that grants
them on a fresh database has to create them first. Every app's role migration calls these
two functions with its own historical `apps` and its own table of grants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _permissions(apps: Any, app_label: str, codenames: Sequence[str]) -> list[Any]:
    permission = apps.get_model("auth", "Permission")
    return list(
        permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    )


def role_permissions_grant(apps: Any, app_label: str, grants: Mapping[str, Sequence[str]]) -> None:
    """Give each role group (by name) the listed permissions of `app_label`."""
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config(app_label)
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    group = apps.get_model("auth", "Group")
    for role, codenames in grants.items():
        group.objects.get(name=role).permissions.add(*_permissions(apps, app_label, codenames))


def role_permissions_revoke(apps: Any, app_label: str, grants: Mapping[str, Sequence[str]]) -> None:
    """The reverse of `role_permissions_grant`."""
    group = apps.get_model("auth", "Group")
    for role, codenames in grants.items():
        group.objects.get(name=role).permissions.remove(*_permissions(apps, app_label, codenames))
