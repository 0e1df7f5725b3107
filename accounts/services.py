"""User management: every change is one transaction, guarded by the account policy.

Guards that keep the portal administrable:
- nobody can deactivate or demote the last active administrator;
- nobody changes their own roles, deactivates themselves or resets their own password here
  (their own password goes through the change-password page, which asks for the old one).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from .roles import Role


class AccountPolicyError(Exception):
    """A user-management action the account policy refuses; the message says why."""


def password_generate() -> str:
    """A random initial password: 144 bits from the OS CSPRNG, URL-safe, 24 characters."""
    return secrets.token_urlsafe(18)


def _active_administrators_locked() -> list[int]:
    """Ids of active administrators, rows locked until the transaction ends.

    The lock serialises two administrators demoting each other at the same moment: the
    second one counts after the first has committed and is refused.
    """
    return list(
        User.objects.select_for_update()
        .filter(is_active=True, groups__name=Role.ADMINISTRATOR)
        .values_list("pk", flat=True)
    )


def _is_last_active_administrator(user: User) -> bool:
    administrators = _active_administrators_locked()
    return administrators == [user.pk]


def _groups(roles: Iterable[Role]) -> list[Group]:
    names = [Role(role).value for role in roles]
    groups = list(Group.objects.filter(name__in=names))
    missing = set(names) - {g.name for g in groups}
    if missing:
        raise AccountPolicyError(
            f"role group(s) {', '.join(sorted(missing))} missing; run `manage.py migrate`"
        )
    return groups


@transaction.atomic
def user_create(
    *,
    actor: User | None,
    username: str,
    roles: Iterable[Role],
    email: str = "",
    password: str | None = None,
) -> tuple[User, str | None]:
    """Create an active user with `roles`.

    With `password=None` a random password is generated and returned (to be shown once,
    never stored in clear); a password chosen by the administrator is validated by Django's
    validators and not returned. `actor` is None for the system (bootstrap, commands).
    """
    roles = list(roles)
    if not roles:
        raise AccountPolicyError("choose at least one role")
    if User.objects.filter(username__iexact=username).exists():
        raise AccountPolicyError(f"a user named {username!r} already exists")
    generated = password is None
    if generated:
        password = password_generate()
    user = User(username=username, email=email)
    validate_password(password, user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    user.groups.set(_groups(roles))
    return user, (password if generated else None)


@transaction.atomic
def user_roles_set(*, actor: User, user: User, roles: Iterable[Role]) -> list[Role]:
    """Replace the user's roles; returns the previous ones."""
    roles = list(roles)
    if actor.pk == user.pk:
        raise AccountPolicyError("you cannot change your own roles; ask another administrator")
    if not roles:
        raise AccountPolicyError("choose at least one role (deactivate the user instead)")
    previous = [r for r in Role if user.groups.filter(name=r.value).exists()]
    if (
        Role.ADMINISTRATOR in previous
        and Role.ADMINISTRATOR not in roles
        and user.is_active
        and _is_last_active_administrator(user)
    ):
        raise AccountPolicyError(
            f"{user.username} is the last active administrator and cannot be demoted"
        )
    user.groups.set(_groups(roles))
    return previous


@transaction.atomic
def user_deactivate(*, actor: User, user: User) -> None:
    """Deactivate the user; their sessions stop working at their next request."""
    if actor.pk == user.pk:
        raise AccountPolicyError("you cannot deactivate your own account")
    if not user.is_active:
        raise AccountPolicyError(f"{user.username} is already inactive")
    if user.groups.filter(name=Role.ADMINISTRATOR).exists() and _is_last_active_administrator(user):
        raise AccountPolicyError(
            f"{user.username} is the last active administrator and cannot be deactivated"
        )
    user.is_active = False
    user.save(update_fields=["is_active"])


@transaction.atomic
def user_reactivate(*, actor: User, user: User) -> None:
    """Let an inactive user sign in again."""
    if user.is_active:
        raise AccountPolicyError(f"{user.username} is already active")
    user.is_active = True
    user.save(update_fields=["is_active"])


@transaction.atomic
def user_password_reset(*, actor: User, user: User, password: str | None = None) -> str | None:
    """Set a new password for another user; their existing sessions end.

    Returns the generated password (shown once) when `password` is None.
    """
    if actor.pk == user.pk:
        raise AccountPolicyError("use Change password for your own account")
    generated = password is None
    if generated:
        password = password_generate()
    validate_password(password, user)
    # set_password changes the session auth hash, so every session of this user is
    # rejected at its next request (django.contrib.auth verifies the hash per request).
    user.set_password(password)
    user.save(update_fields=["password"])
    return password if generated else None
