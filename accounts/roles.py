"""The portal's roles. Each is a Django group (created by a migration) holding permissions.

Apps that add models extend a role by a migration that grants the new permissions to the
group; views only ever check permissions, never role names.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db import models


class Role(models.TextChoices):
    """Group name (value) and label of each role; see the roles table in the README."""

    ADMINISTRATOR = "administrator", "Administrator"
    KEY_CUSTODIAN = "key_custodian", "Key custodian"
    CA_OPERATOR = "ca_operator", "CA operator"
    AUDITOR = "auditor", "Auditor"

    @classmethod
    def parse(cls, text: str) -> Role:
        """Accept `key_custodian`, `key-custodian` or `Key custodian`; ValueError otherwise."""
        normalised = text.strip().lower().replace("-", "_").replace(" ", "_")
        try:
            return cls(normalised)
        except ValueError:
            choices = ", ".join(cls.values)
            raise ValueError(f"unknown role {text!r}; choose from {choices}") from None


def user_roles(user: User | AnonymousUser) -> list[Role]:
    """The user's roles in the table's order."""
    if not user.is_authenticated:
        return []
    names = set(user.groups.values_list("name", flat=True))
    return [role for role in Role if role.value in names]
