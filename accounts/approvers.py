"""Who may approve a two-person request: a person, not an identity someone manufactured.

An administrator can create accounts and (while the team is being set up) grant roles; what
they cannot do is be the person behind another account. So an approver must, besides holding
the kind's permission and not being the requester (the services check that):

- have chosen their own password (an invitation they accepted, or a change of their own:
  `AccountSetup.password_chosen_at`), never one an administrator set or saw;
- have a confirmed second factor of their own (enrolled by them, at sign-in);
- be past the cooling-off (``KMS_APPROVER_COOLING_OFF`` seconds, 24 h by default) since the
  latest of: the account's creation, their password choice, their authenticator's
  enrollment, and the grant of the role that gives them the permission. An administrator
  who resets someone's password and second factor to take the account over gets an
  account that cannot approve anything for a day, and the real holder, locked out, notices.

Whoever holds the server's shell and master keyring is outside what these rules can stop.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone

from kmsportal.two_person import TwoPersonError

from .models import AccountSetup, MfaDevice, RoleAssignment


class ApproverNotEligible(TwoPersonError):
    """The user may not approve two-person requests (yet); the message says why."""

    code = "approver_not_eligible"
    status = 403


def cooling_off() -> timedelta:
    return timedelta(seconds=max(0, int(settings.KMS_APPROVER_COOLING_OFF)))


def _roles_with(permission: str) -> list[str]:
    app_label, _, codename = permission.partition(".")
    return list(
        Group.objects.filter(
            permissions__codename=codename, permissions__content_type__app_label=app_label
        ).values_list("name", flat=True)
    )


def approver_refusal(*, user: User, permission: str, now: datetime | None = None) -> str | None:
    """Why ``user`` may not approve a request that needs ``permission``; None if they may."""
    now = now or timezone.now()
    if not user.is_active:
        return "this account is inactive"
    if not user.has_perm(permission):
        return f"approving this needs the {permission} permission"
    wait = cooling_off()
    setup = AccountSetup.objects.filter(user_id=user.pk).first()
    if setup is None or setup.password_chosen_at is None:
        return (
            f"{user.get_username()} has not chosen their own password yet (through their "
            "invitation link); accounts whose password someone else set cannot approve"
        )
    device = MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False).first()
    if device is None:
        return (
            f"{user.get_username()} has not enrolled their own authenticator app; only "
            "accounts with a second factor can approve"
        )
    granted = (
        RoleAssignment.objects.filter(user_id=user.pk, role__in=_roles_with(permission))
        .order_by("granted_at")
        .values_list("granted_at", flat=True)
        .first()
    )
    if granted is None:
        return f"no role of {user.get_username()} gives the {permission} permission"
    assert device.confirmed_at is not None  # the query above asked for a confirmed device
    moments: dict[str, datetime] = {
        "the account was created": user.date_joined,
        "they chose their password": setup.password_chosen_at,
        "they enrolled their authenticator": device.confirmed_at,
        "the role that lets them approve was granted": granted,
    }
    latest_what, latest = max(moments.items(), key=lambda item: item[1])
    if now - latest < wait:
        until = latest + wait
        return (
            f"cooling-off: {latest_what} less than {_human(wait)} ago; "
            f"{user.get_username()} may approve from {until:%Y-%m-%d %H:%M} UTC"
        )
    return None


def approver_check(*, user: User, permission: str) -> None:
    """Raise :class:`ApproverNotEligible` unless ``user`` may approve (see module docstring)."""
    refusal = approver_refusal(user=user, permission=permission)
    if refusal is not None:
        raise ApproverNotEligible(refusal)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{seconds} seconds"
