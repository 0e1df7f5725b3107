"""Start-up check of the multi-factor setting: a misspelt role must not switch MFA off
(it would fail closed anyway: accounts.mfa refuses to decide with an unknown role)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from kmsportal.checks import KEYRING_TAG

from .roles import Role


# Under the tag that kmsportal.wsgi runs before serving, so gunicorn refuses to start too
# (and `check`, `migrate` and `runserver` run it as well).
@register(KEYRING_TAG)
def check_mfa_required_roles(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """Every name in KMS_MFA_REQUIRED_ROLES must be a role."""
    errors: list[CheckMessage] = []
    for name in settings.KMS_MFA_REQUIRED_ROLES:
        if not name.strip():
            continue
        try:
            Role.parse(name)
        except ValueError as exc:
            errors.append(
                Error(
                    f"KMS_MFA_REQUIRED_ROLES: {exc}",
                    hint="List role names separated by commas, or leave it empty for nobody.",
                    id="accounts.E001",
                )
            )
    return errors
