"""Sign-in lockout: after too many attempts at one account or failures from one address,
further attempts are refused for a cooling-off period (OWASP ASVS V2.2.1).

Counting every attempt at one account, however it is spelled and whichever worker answers:
- the counter's key is the username as authentication reads it (Django's sign-in form strips
  it and applies NFKC, `User.normalize_username`), case-folded because usernames
  are unique regardless of case (accounts.services.user_create): ``"  Caop1 "`` and
  ``"\uff43aop1"`` (full-width c) count for ``caop1``;
- the counters live in the `counters` cache (kmsportal.counters): the database, shared by
  every gunicorn worker and node, or Redis when CACHE_URL is set;
- an attempt at a username is counted *before* its password is checked (and the count is
  cleared by a success), so attempts racing in parallel cannot all slip under the limit:
  the increment is atomic and the attempt that takes the count past the limit is refused.

Usernames are keyed by an HMAC, never stored in clear. A refusal says the same thing whether
or not the username exists.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass

from django.conf import settings

from kmsportal.counters import counter_add, counters


@dataclass(frozen=True)
class Lockout:
    scope: str  # "username" or "address" (password), "user" (second factor)
    retry_after: int  # seconds


def username_normalise(username: str) -> str:
    """The username as the sign-in form hands it to authentication (stripped, NFKC)."""
    return unicodedata.normalize("NFKC", username.strip())


def _username_key(username: str) -> str:
    folded = username_normalise(username).casefold()
    digest = hmac.new(settings.SECRET_KEY.encode(), folded.encode(), hashlib.sha256)
    return f"kms:signin:user:{digest.hexdigest()[:32]}"


def _address_key(address: str) -> str:
    return f"kms:signin:addr:{address}"


def _count(key: str) -> int:
    return counters().get(key) or 0


def sign_in_attempt_begin(*, username: str, address: str) -> Lockout | None:
    """Check the lockout for this attempt and, unless refused, count it against its username.

    Called before the password is looked at. Returns the lockout in force (the attempt is
    refused, nothing else is counted), or None: the attempt goes on, already counted.
    """
    timeout = settings.SIGN_IN_LOCKOUT_SECONDS
    if _count(_address_key(address)) >= settings.SIGN_IN_MAX_FAILURES_PER_ADDRESS:
        return Lockout("address", timeout)
    key = _username_key(username)
    limit = settings.SIGN_IN_MAX_FAILURES_PER_USERNAME
    if _count(key) >= limit:
        return Lockout("username", timeout)
    if counter_add(counters(), key, timeout=timeout) > limit:
        return Lockout("username", timeout)  # parallel attempts got there first
    return None


def sign_in_failure_count(*, username: str, address: str) -> None:
    """Count a failed attempt against its source address (its username counted already)."""
    counter_add(counters(), _address_key(address), timeout=settings.SIGN_IN_LOCKOUT_SECONDS)


def sign_in_success_reset(*, username: str, address: str) -> None:
    """A successful sign-in clears its username's count (not the address's)."""
    counters().delete(_username_key(username))


# --- second factor -----------------------------------------------------------------------
# Wrong MFA codes are counted per user (the password is already proven, so the address adds
# nothing): SIGN_IN_MAX_FAILURES_PER_USERNAME failures, then SIGN_IN_LOCKOUT_SECONDS of
# refusals, checked before any code is looked at. Six digits are 10**6 codes and the window
# accepts three: without a limit, a stolen password plus ~170k guesses would be enough.


def _mfa_key(user_id: int) -> str:
    return f"kms:mfa:user:{user_id}"


def mfa_lockout(*, user_id: int) -> Lockout | None:
    """The lockout in force for this user's next code, if any."""
    if _count(_mfa_key(user_id)) >= settings.SIGN_IN_MAX_FAILURES_PER_USERNAME:
        return Lockout("user", settings.SIGN_IN_LOCKOUT_SECONDS)
    return None


def mfa_failure_count(*, user_id: int) -> None:
    """Count a wrong code; the window restarts with each failure."""
    counter_add(counters(), _mfa_key(user_id), timeout=settings.SIGN_IN_LOCKOUT_SECONDS)


def mfa_success_reset(*, user_id: int) -> None:
    """A correct code clears the user's count."""
    counters().delete(_mfa_key(user_id))
