"""Personal API tokens: create (shown once), revoke, authenticate, record use.

A token reads ``kms_<prefix>_<secret>``: the prefix (12 hex digits, random, not secret) finds
the row, the secret (256 bits from the CSPRNG) proves possession. Only SHA-256 of the whole
token is stored (adminapi.models says why a fast hash is right here), compared in constant
time.

A token acts as its user, now: permissions are read from the user's current roles at every
call, so a role removed is removed from the user's tokens at once; a deactivated user's tokens
stop working, and so do tokens made before a password reset or a reset of the user's second
factor (the token records a hash of the credentials it was made under, as Django's sessions
do). A ``read-only`` token never changes anything, whatever the user's roles.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import MfaDevice
from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.crypto.errors import KMSError

from .events import ApiAction
from .models import ApiToken, TokenScope

TOKEN_PREFIX = "kms_"  # noqa: S105 (a marker, not a secret)
MAX_DAYS = 90  # every token expires; a longer-lived automation makes a new one
MAX_LIVE_TOKENS = 20  # per user
# Reads are recorded at most once per token and this interval (writes: every call).
READ_AUDIT_INTERVAL = timedelta(seconds=60)


class ApiTokenError(KMSError):
    """A token that cannot be made or revoked as asked; the message says why."""

    code = "api_token_refused"
    status = 400


@dataclass(frozen=True)
class TokenCreated:
    token: ApiToken
    secret: str  # the whole token, shown once; only its hash is stored


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _credential_hash(user: User) -> str:
    """Changes when the user's password does (Django's session auth hash, hashed again)."""
    return _hash(user.get_session_auth_hash())


def _confirmed_device(user: User) -> uuid.UUID | None:
    return (
        MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False)
        .values_list("id", flat=True)
        .first()
    )


@transaction.atomic
def api_token_create(
    *,
    actor: User | None,
    user: User,
    name: str,
    scope: str,
    days: int,
    mfa_device_id: uuid.UUID | None = None,
) -> TokenCreated:
    """Make a token for ``user`` valid ``days`` days (1..MAX_DAYS); returns it once.

    ``mfa_device_id`` is the authenticator the creating session was verified with (the
    portal); the management command passes None and the user's current one is recorded.
    ``actor`` is who made it (None: the server's shell).
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ApiTokenError("give the token a name of 1 to 100 characters (what uses it)")
    if scope not in TokenScope.values:
        raise ApiTokenError(f"scope must be one of {', '.join(TokenScope.values)}")
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ApiTokenError(f"a token expires after 1 to {MAX_DAYS} days")
    if not user.is_active:
        raise ApiTokenError(f"{user.get_username()} is inactive")
    now = timezone.now()
    live = ApiToken.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=now)
    if live.count() >= MAX_LIVE_TOKENS:
        raise ApiTokenError(
            f"{user.get_username()} already holds {MAX_LIVE_TOKENS} live tokens; revoke one first"
        )
    prefix = secrets.token_hex(6)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=prefix,
        token_hash=_hash(raw),
        scope=scope,
        credential_hash=_credential_hash(user),
        mfa_device_id=mfa_device_id or _confirmed_device(user),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    audit_event_record(
        action=ApiAction.TOKEN_CREATED,
        actor=actor,
        target=token,
        target_label=f"{user.get_username()}: {name}",
        details={
            "user": user.get_username(),
            "name": name,
            "prefix": prefix,
            "scope": scope,
            "expires_at": token.expires_at.isoformat(),
        },
    )
    return TokenCreated(token=token, secret=raw)


@transaction.atomic
def api_token_revoke(*, actor: User | None, token: ApiToken) -> ApiToken:
    """Revoke ``token`` now (its own user, or the server's shell with actor None)."""
    token = ApiToken.objects.select_for_update().select_related("user").get(pk=token.pk)
    if actor is not None and actor.pk != token.user_id:
        raise ApiTokenError("only the token's own user can revoke it", status=403)
    if token.revoked_at is not None:
        raise ApiTokenError("this token is already revoked", status=409)
    token.revoked_at = timezone.now()
    token.revoked_by_name = actor.get_username() if actor is not None else "system"
    token.save(update_fields=["revoked_at", "revoked_by_name"])
    audit_event_record(
        action=ApiAction.TOKEN_REVOKED,
        actor=actor,
        target=token,
        target_label=f"{token.user.get_username()}: {token.name}",
        details={"user": token.user.get_username(), "name": token.name, "prefix": token.prefix},
    )
    return token


def api_token_list(*, user: User) -> list[ApiToken]:
    """The user's own tokens, newest first (revoked and expired ones included)."""
    return list(ApiToken.objects.filter(user=user))


def api_token_authenticate(raw: str) -> ApiToken | None:
    """The live token ``raw`` names, with its active user; None otherwise. Writes nothing:
    whatever an unauthenticated caller sends costs one indexed read, never an insert."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    prefix, _, secret = raw[len(TOKEN_PREFIX) :].partition("_")
    if len(prefix) != 12 or not secret:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.token_hash, _hash(raw)):
        return None
    user = token.user
    if not token.is_live or not user.is_active:
        return None
    if not hmac.compare_digest(token.credential_hash, _credential_hash(user)):
        return None  # the password changed (or was reset) since the token was made
    if token.mfa_device_id is not None and _confirmed_device(user) != token.mfa_device_id:
        return None  # the authenticator it was made under was reset
    return token


def api_token_used(*, token: ApiToken, method: str, path: str, write: bool) -> None:
    """Record a call made with ``token``: every call that may change something; reads at
    most once per token and READ_AUDIT_INTERVAL (a conditional UPDATE elects the one call
    that records, so concurrent reads do not multiply events)."""
    now = timezone.now()
    with transaction.atomic():
        elected = ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - READ_AUDIT_INTERVAL)
        )
        first_in_interval = elected.update(last_used_at=now) == 1
        if write and not first_in_interval:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        if not (write or first_in_interval):
            return
        audit_event_record(
            action=ApiAction.TOKEN_USED,
            outcome=Outcome.SUCCESS,
            actor=token.user,
            target=token,
            target_label=f"{token.user.get_username()}: {token.name}",
            details={
                "prefix": token.prefix,
                "scope": token.scope,
                "method": method,
                "path": path[:255],
                "write": write,
            },
        )
