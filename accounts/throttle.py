"""Sign-in lockout: after too many failures for one username or from one address, further
attempts are refused for a cooling-off period (OWASP ASVS V2.2.1).

Counters live in the cache (`CACHE_URL`): with several gunicorn workers or servers, point it
at Redis so they share one count. Usernames are keyed by an HMAC, never stored in clear.
A refusal says the same thing whether or not the username exists.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class Lockout:
    scope: str  # "username" or "address" (password), "user" (second factor)
    retry_after: int  # seconds


def _keys(username: str, address: str) -> dict[str, str]:
    digest = hmac.new(settings.SECRET_KEY.encode(), username.lower().encode(), hashlib.sha256)
    return {
        "username": f"kms:signin:user:{digest.hexdigest()[:32]}",
        "address": f"kms:signin:addr:{address}",
    }


def _limits() -> dict[str, int]:
    return {
        "username": settings.SIGN_IN_MAX_FAILURES_PER_USERNAME,
        "address": settings.SIGN_IN_MAX_FAILURES_PER_ADDRESS,
    }


def sign_in_lockout(*, username: str, address: str) -> Lockout | None:
    """The lockout in force for this attempt, if any (checked before the password)."""
    limits = _limits()
    for scope, key in _keys(username, address).items():
        if (cache.get(key) or 0) >= limits[scope]:
            return Lockout(scope, settings.SIGN_IN_LOCKOUT_SECONDS)
    return None


def sign_in_failure_count(*, username: str, address: str) -> None:
    """Count a failed attempt; the window restarts with each failure."""
    for key in _keys(username, address).values():
        _failure_add(key)


def _failure_add(key: str) -> None:
    """One more failure under `key`; the lockout window restarts with each."""
    cache.add(key, 0, timeout=settings.SIGN_IN_LOCKOUT_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=settings.SIGN_IN_LOCKOUT_SECONDS)
    cache.touch(key, settings.SIGN_IN_LOCKOUT_SECONDS)


def sign_in_success_reset(*, username: str, address: str) -> None:
    """A successful sign-in clears its username's count (not the address's)."""
    cache.delete(_keys(username, address)["username"])


# --- second factor -----------------------------------------------------------------------
# Wrong MFA codes are counted per user (the password is already proven, so the address adds
# nothing): SIGN_IN_MAX_FAILURES_PER_USERNAME failures, then SIGN_IN_LOCKOUT_SECONDS of
# refusals, checked before any code is looked at. Six digits are 10**6 codes and the window
# accepts three: without a limit, a stolen password plus ~170k guesses would be enough.


def _mfa_key(user_id: int) -> str:
    return f"kms:mfa:user:{user_id}"


def mfa_lockout(*, user_id: int) -> Lockout | None:
    """The lockout in force for this user's next code, if any."""
    if (cache.get(_mfa_key(user_id)) or 0) >= settings.SIGN_IN_MAX_FAILURES_PER_USERNAME:
        return Lockout("user", settings.SIGN_IN_LOCKOUT_SECONDS)
    return None


def mfa_failure_count(*, user_id: int) -> None:
    """Count a wrong code; the window restarts with each failure."""
    _failure_add(_mfa_key(user_id))


def mfa_success_reset(*, user_id: int) -> None:
    """A correct code clears the user's count."""
    cache.delete(_mfa_key(user_id))
