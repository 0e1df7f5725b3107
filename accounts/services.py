"""User management: every change is one transaction, guarded by the account policy.

Guards that keep the portal administrable:
- nobody can deactivate or demote the last active administrator;
- nobody changes their own roles, deactivates themselves or resets their own password here
  (their own password goes through the change-password page, which asks for the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.http import HttpRequest

from audit.models import AuditAction, Outcome
from audit.services import audit_event_record

from .mfa import mfa_session_begin
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
    audit_event_record(
        action=AuditAction.USER_CREATED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={
            "roles": [Role(r).value for r in roles],
            "email": email,
            "initial_password_generated": generated,
        },
    )
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
    audit_event_record(
        action=AuditAction.USER_ROLES_CHANGED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={"from": [r.value for r in previous], "to": [Role(r).value for r in roles]},
    )
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
    audit_event_record(
        action=AuditAction.USER_DEACTIVATED, actor=actor, target=user, target_label=user.username
    )


@transaction.atomic
def user_reactivate(*, actor: User, user: User) -> None:
    """Let an inactive user sign in again."""
    if user.is_active:
        raise AccountPolicyError(f"{user.username} is already active")
    user.is_active = True
    user.save(update_fields=["is_active"])
    audit_event_record(
        action=AuditAction.USER_REACTIVATED, actor=actor, target=user, target_label=user.username
    )


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
    audit_event_record(
        action=AuditAction.USER_PASSWORD_RESET,
        actor=actor,
        target=user,
        target_label=user.username,
        details={"generated": generated},
    )
    return password if generated else None


def _username_fingerprint(username: str) -> str:
    """A keyed fingerprint of a username that matches no account.

    People type passwords into the username field; like CloudTrail, the audit log never
    stores an unknown username in clear. The HMAC (keyed by SECRET_KEY) still lets an auditor
    see that the same unknown name was tried repeatedly.
    """
    digest = hmac.new(settings.SECRET_KEY.encode(), username.encode(), hashlib.sha256)
    return digest.hexdigest()[:16]


@transaction.atomic
def user_sign_in(*, request: HttpRequest, user: User) -> bool:
    """Start a session for `user` (already authenticated) and record it, in one transaction.

    Returns True when the user must still pass the second factor: the session is then
    marked MFA-pending and reaches only the MFA pages (accounts.middleware).
    """
    audit_event_record(
        action=AuditAction.SIGN_IN, actor=user, target=user, target_label=user.username
    )
    auth_login(request, user)
    return mfa_session_begin(request=request, user=user)


@transaction.atomic
def user_sign_in_failed(*, username: str) -> None:
    """Record a refused sign-in: the username if it names an account, never the password."""
    account = User.objects.filter(username=username).first()
    if account is not None:
        reason = "wrong password" if account.is_active else "account inactive"
        audit_event_record(
            action=AuditAction.SIGN_IN_FAILED,
            outcome=Outcome.DENIED,
            anonymous=True,
            actor_name=account.username,
            target=account,
            target_label=account.username,
            details={"username": account.username, "reason": reason},
        )
    else:
        audit_event_record(
            action=AuditAction.SIGN_IN_FAILED,
            outcome=Outcome.DENIED,
            anonymous=True,
            target_type="auth.User",
            target_label="(no such user)",
            details={
                "username": "HIDDEN: no such user",
                "username_fingerprint": _username_fingerprint(username),
                "reason": "unknown user",
            },
        )


@transaction.atomic
def user_sign_in_locked(*, username: str, scope: str) -> None:
    """Record a sign-in refused by the lockout (which limit, never the password)."""
    account = User.objects.filter(username=username).first()
    audit_event_record(
        action=AuditAction.SIGN_IN_LOCKED,
        outcome=Outcome.DENIED,
        anonymous=True,
        actor_name=account.username if account else "anonymous",
        target_type="auth.User",
        target_id=str(account.pk) if account else "",
        target_label=account.username if account else "(no such user)",
        details={
            "limit": scope,
            "username": account.username if account else "HIDDEN: no such user",
        },
    )


@transaction.atomic
def user_sign_out(*, request: HttpRequest) -> None:
    user = request.user
    if user.is_authenticated:
        audit_event_record(
            action=AuditAction.SIGN_OUT, actor=user, target=user, target_label=user.username
        )
    auth_logout(request)


@transaction.atomic
def user_password_change(*, request: HttpRequest, user: User, password: str) -> None:
    """Change one's own password (old one already checked); other sessions end."""
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_event_record(
        action=AuditAction.PASSWORD_CHANGED, actor=user, target=user, target_label=user.username
    )
    update_session_auth_hash(request, user)
