"""One-time invitation links: how a person sets their own password.

A new account (accounts.services.user_create) and an administrator's password reset get an
invitation instead of a password: a 256-bit random token in a link, stored only as its
SHA-256, usable once, until ``KMS_INVITATION_SECONDS`` (72 h by default) have passed. A new
invitation for the same user voids the older unused ones. At the link the person chooses
their password (Django's validators); their second factor they enrol at their first
sign-in. The administrator who handed over the link never sees the password, and an
account whose password someone else set cannot approve two-person requests
(accounts.approvers).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from audit.services import audit_event_record
from kmsportal.crypto.errors import KMSError

from .events import AccountAction
from .models import AccountSetup, Invitation


class InvitationInvalid(KMSError):
    """The link is unknown, used, voided or expired; the message says what to do."""

    code = "invitation_invalid"
    status = 400


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(token: str) -> str:
    """The absolute link to hand over (KMS_PUBLIC_URL and the invitation page).

    The token travels in the query string, not the path: gunicorn's access log and Django's
    request warnings record the path only, so an unused link never lands in a log file."""
    return (
        f"{settings.KMS_PUBLIC_URL}{reverse('accounts:invitation')}?{urlencode({'token': token})}"
    )


@transaction.atomic
def invitation_issue(*, actor: User | None, user: User, purpose: str) -> str:
    """A fresh invitation for ``user``; returns the token (to be shown once). Older unused
    invitations of the user stop working. Audited without the token."""
    now = timezone.now()
    Invitation.objects.filter(user=user, used_at__isnull=True, voided_at__isnull=True).update(
        voided_at=now
    )
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        user=user,
        token_hash=_hash(token),
        purpose=purpose,
        created_by_name=actor.get_username() if actor is not None else "system",
        created_at=now,
        expires_at=now + timedelta(seconds=settings.KMS_INVITATION_SECONDS),
    )
    audit_event_record(
        action=AccountAction.INVITATION_ISSUED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={
            "invitation": invitation.pk,
            "purpose": purpose,
            "expires_at": invitation.expires_at.isoformat(),
        },
    )
    return token


def invitation_get(*, token: str) -> Invitation:
    """The usable invitation behind ``token``; :class:`InvitationInvalid` otherwise."""
    invitation = (
        Invitation.objects.select_related("user").filter(token_hash=_hash(token or "")).first()
    )
    if invitation is None or not invitation.is_usable or not invitation.user.is_active:
        raise InvitationInvalid(
            "This invitation link is not valid: it was used already, replaced by a newer "
            "one, or it expired. Ask an administrator for a new link."
        )
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, password: str) -> User:
    """Set the invited user's own password; the link is spent. Validation errors of the
    password (Django's validators) raise ValidationError and spend nothing."""
    invitation = invitation_get(token=token)
    invitation = Invitation.objects.select_for_update().select_related("user").get(pk=invitation.pk)
    if not invitation.is_usable:  # accepted by a racing request meanwhile
        raise InvitationInvalid("This invitation link was used already.")
    user = invitation.user
    validate_password(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    now = timezone.now()
    invitation.used_at = now
    invitation.save(update_fields=["used_at"])
    AccountSetup.objects.update_or_create(user=user, defaults={"password_chosen_at": now})
    audit_event_record(
        action=AccountAction.INVITATION_ACCEPTED,
        actor=user,
        target=user,
        target_label=user.username,
        details={"invitation": invitation.pk, "purpose": invitation.purpose},
    )
    return user
