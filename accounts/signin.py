"""Signing in and out, and changing one's own password: each audited (a failed or locked-out
sign-in names the username only by a keyed fingerprint when no such account exists)."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditAction, Outcome
from audit.services import audit_event_record

from .mfa import mfa_session_begin
from .models import AccountSetup


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
    AccountSetup.objects.update_or_create(
        user=user, defaults={"password_chosen_at": timezone.now()}
    )
    audit_event_record(
        action=AuditAction.PASSWORD_CHANGED, actor=user, target=user, target_label=user.username
    )
    update_session_auth_hash(request, user)
