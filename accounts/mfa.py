"""Multi-factor sign-in: TOTP authenticator apps and one-time recovery codes.

Who must use it: holders of the roles in `KMS_MFA_REQUIRED_ROLES` (administrators, key
custodians and CA operators by default), and anyone who enrolled an authenticator anyway.

Invariants:
- the TOTP secret is stored only sealed under the master keyring (kmsportal.keyring), bound
  to its device row and user by the AAD (`MfaDevice.aad`); it is shown once, on the
  enrollment page, and never logged or audited;
- a code is accepted for one time step at most: `MfaDevice.last_used_step` only grows, and
  every service that checks a code locks the user's row first, so two requests carrying the
  same code cannot both pass;
- recovery codes are stored as SHA-256 hashes (kmsportal.crypto.otp) and each works once;
- every change and every verification, passed or failed, is audited; a failure is recorded
  in its own transaction, since the refused action itself changes nothing.

A session records the device it was verified with (`SESSION_DEVICE`); when that device is
gone (an administrator reset it), `mfa_session_state` says the session has ended, and
`accounts.middleware.MfaRequiredMiddleware` signs it out at its next request, the way a
password reset ends sessions through Django's session auth hash.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import models, transaction
from django.http import HttpRequest
from django.middleware.csrf import rotate_token
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.crypto import otp
from kmsportal.crypto.errors import KMSError
from kmsportal.keyring.services import seal, unseal

from .events import MfaAction
from .models import MfaDevice, RecoveryCode
from .roles import Role

# Session keys. SESSION_VERIFIED is False from the password step until the second factor
# passes; SESSION_DEVICE is the id of the confirmed device the session was signed in or
# verified with ("" when the user had none).
SESSION_VERIFIED = "mfa_verified"
SESSION_DEVICE = "mfa_device"


class MfaError(KMSError):
    """A multi-factor action that cannot be done; the message says why."""

    code = "mfa_refused"
    status = 400


class MfaCodeInvalid(MfaError):
    """The code is not a current TOTP code nor an unused recovery code of this user."""

    def __init__(self, message: str, *, method: str, reason: str) -> None:
        super().__init__(message)
        self.method = method  # what the input looked like: totp, recovery_code or unknown
        self.reason = reason  # for the audit log


class MfaNotEnrolled(MfaError):
    """The user has no (confirmed) authenticator, or no enrollment in progress."""


class MfaAlreadyEnrolled(MfaError):
    """The user already has a confirmed authenticator: it is never replaced silently."""


class MfaPolicyError(MfaError):
    """A reset the policy refuses (your own MFA, or nothing to reset)."""


class MfaMethod(models.TextChoices):
    TOTP = "totp", "Authenticator app code"
    RECOVERY_CODE = "recovery_code", "Recovery code"


@dataclass(frozen=True)
class MfaProvisioning:
    """What the enrollment page shows, once: the secret for manual entry and the QR's URI."""

    secret_base32: str
    uri: str


@dataclass(frozen=True)
class MfaStatus:
    required: bool
    enrolled_at: datetime | None  # when the confirmed device was confirmed
    recovery_codes_left: int

    @property
    def enrolled(self) -> bool:
        return self.enrolled_at is not None


class MfaSessionState(enum.Enum):
    SATISFIED = "satisfied"  # verified, or not required for this user
    PENDING_VERIFY = "pending_verify"  # password only; the user has an authenticator
    PENDING_ENROLL = "pending_enroll"  # password only; the user must enrol one first
    ENDED = "ended"  # the device this session was verified with is gone (reset)


# --- reads ------------------------------------------------------------------------------


def mfa_required_roles() -> set[str]:
    """Group names of the roles that must use MFA (from KMS_MFA_REQUIRED_ROLES)."""
    return {Role.parse(name).value for name in settings.KMS_MFA_REQUIRED_ROLES if name.strip()}


def _confirmed_device_id(user: User) -> uuid.UUID | None:
    return (
        MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False)
        .values_list("id", flat=True)
        .first()
    )


def _has_required_role(user: User) -> bool:
    roles = mfa_required_roles()
    return bool(roles) and user.groups.filter(name__in=roles).exists()


def mfa_required_for(user: User | AnonymousUser) -> bool:
    """Whether `user` must pass the second factor: a required role, or an enrolled device."""
    if not user.is_authenticated:
        return False
    return _confirmed_device_id(user) is not None or _has_required_role(user)


def mfa_status(*, user: User) -> MfaStatus:
    """The user's MFA state for their own page and the user-administration page."""
    device = MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False).first()
    left = RecoveryCode.objects.filter(user_id=user.pk, used_at__isnull=True).count()
    return MfaStatus(
        required=device is not None or _has_required_role(user),
        enrolled_at=device.confirmed_at if device else None,
        recovery_codes_left=left if device else 0,
    )


def mfa_enrollment_pending(*, user: User) -> MfaProvisioning | None:
    """The unconfirmed device's provisioning data (to show the same QR code again), if any."""
    device = MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=True).first()
    if device is None:
        return None
    return _provisioning(device, unseal(device.sealed_secret, aad=device.aad))


def mfa_session_state(request: HttpRequest) -> MfaSessionState:
    """Where the signed-in session of `request` stands with the second factor."""
    user: User = request.user  # type: ignore[assignment]  # called for signed-in sessions only
    session = request.session
    device_id = _confirmed_device_id(user)
    current = str(device_id) if device_id else ""
    recorded = session.get(SESSION_DEVICE)
    if recorded and recorded != current:
        # Verified (or signed in) with a device that is no longer the user's: reset.
        return MfaSessionState.ENDED
    if device_id is None and not _has_required_role(user):
        return MfaSessionState.SATISFIED
    # A session that never went through the sign-in form (no SESSION_VERIFIED at all, as
    # after Client.force_login) is not verified.
    if session.get(SESSION_VERIFIED) is True and recorded == current:
        return MfaSessionState.SATISFIED
    return MfaSessionState.PENDING_VERIFY if device_id else MfaSessionState.PENDING_ENROLL


# --- session ----------------------------------------------------------------------------


def mfa_session_begin(*, request: HttpRequest, user: User) -> bool:
    """Mark a session that just passed the password step; True when MFA is still pending.

    Called by `signin.user_sign_in` right after `login()` (which cycled the session key).
    """
    device_id = _confirmed_device_id(user)
    request.session[SESSION_DEVICE] = str(device_id) if device_id else ""
    pending = device_id is not None or _has_required_role(user)
    if pending:
        request.session[SESSION_VERIFIED] = False
    else:
        request.session.pop(SESSION_VERIFIED, None)
    return pending


def mfa_session_verified(*, request: HttpRequest, user: User) -> None:
    """Mark the session verified after a passed code or a confirmed enrollment.

    A new session key and CSRF token: whatever an attacker may have planted before the
    second factor (session fixation) is worth nothing after it.
    """
    device_id = _confirmed_device_id(user)
    request.session.cycle_key()
    rotate_token(request)
    request.session[SESSION_DEVICE] = str(device_id) if device_id else ""
    request.session[SESSION_VERIFIED] = True


# --- writes -----------------------------------------------------------------------------


def _user_locked(user: User) -> User:
    """The user's row, locked until the transaction ends: serialises every MFA change and
    every code check of one user (a code raced from two requests passes once)."""
    return User.objects.select_for_update().get(pk=user.pk)


def _provisioning(device: MfaDevice, secret: bytes) -> MfaProvisioning:
    return MfaProvisioning(
        secret_base32=otp.totp_secret_base32(secret),
        uri=otp.totp_provisioning_uri(secret, username=device.user.get_username()),
    )


def _recovery_codes_replace(user: User) -> list[str]:
    """Delete the user's recovery codes and store fresh ones (hashed); returns them in clear."""
    RecoveryCode.objects.filter(user=user).delete()
    codes = otp.recovery_codes_generate()
    RecoveryCode.objects.bulk_create(
        RecoveryCode(user=user, code_hash=otp.recovery_code_hash(code)) for code in codes
    )
    return codes


def _totp_step_accepted(device: MfaDevice, code: str, *, at: float | None) -> int:
    """The step of a valid, not yet used TOTP code; raises MfaCodeInvalid otherwise."""
    secret = unseal(device.sealed_secret, aad=device.aad)
    step = otp.totp_verify(secret, code, at=at)
    if step is None:
        raise MfaCodeInvalid(
            "That code is not valid. Type the 6-digit code your authenticator app shows now "
            "(check that the phone's clock is right).",
            method=MfaMethod.TOTP,
            reason="wrong code",
        )
    if step <= device.last_used_step:
        raise MfaCodeInvalid(
            "That code was already used. Wait for the next code in your authenticator app.",
            method=MfaMethod.TOTP,
            reason="code already used",
        )
    return step


def _looks_like_totp(code: str) -> bool:
    compact = "".join(code.split())
    return len(compact) == otp.TOTP_DIGITS and compact.isascii() and compact.isdigit()


@transaction.atomic
def _failure_record(*, user: User, purpose: str, error: MfaCodeInvalid) -> None:
    audit_event_record(
        action=MfaAction.MFA_FAILED,
        outcome=Outcome.DENIED,
        actor=user,
        target=user,
        target_label=user.get_username(),
        details={"purpose": purpose, "method": str(error.method), "reason": error.reason},
    )


@transaction.atomic
def mfa_enrollment_begin(*, user: User) -> MfaProvisioning:
    """Start (or restart) enrolling an authenticator: a fresh secret on an unconfirmed device.

    An unconfirmed device from an earlier attempt is replaced; a confirmed one never is
    (MfaAlreadyEnrolled): an administrator resets it, or the user keeps it. Nothing is
    audited until the enrollment is confirmed.
    """
    user = _user_locked(user)
    existing = MfaDevice.objects.filter(user=user).first()
    if existing is not None and existing.is_confirmed:
        raise MfaAlreadyEnrolled(
            "You already have an authenticator app; an administrator can reset it if it is lost."
        )
    if existing is not None:
        existing.delete()
    secret = otp.totp_secret_generate()
    device = MfaDevice(user=user)
    device.sealed_secret = seal(secret, aad=device.aad)
    device.save()
    return _provisioning(device, secret)


@transaction.atomic
def _enrollment_confirm(*, user: User, code: str, at: float | None) -> list[str]:
    user = _user_locked(user)
    device = MfaDevice.objects.filter(user=user).first()
    if device is None:
        raise MfaNotEnrolled("No enrollment in progress: open the enrollment page again.")
    if device.is_confirmed:
        raise MfaAlreadyEnrolled("Your authenticator app is already set up.")
    step = _totp_step_accepted(device, code, at=at)
    device.confirmed_at = timezone.now()
    device.last_used_step = step
    device.save(update_fields=["confirmed_at", "last_used_step"])
    codes = _recovery_codes_replace(user)
    audit_event_record(
        action=MfaAction.MFA_ENROLLED,
        actor=user,
        target=user,
        target_label=user.get_username(),
        details={"method": MfaMethod.TOTP.value, "recovery_codes": len(codes)},
    )
    return codes


def mfa_enrollment_confirm(*, user: User, code: str, at: float | None = None) -> list[str]:
    """Confirm the unconfirmed device with a first correct code; returns the recovery codes.

    The codes are returned in clear this once (to be shown once) and stored only hashed.
    A wrong code changes nothing and is audited as `auth.mfa_failed`. `at` is the Unix time
    to check the code against (now by default).
    """
    try:
        return _enrollment_confirm(user=user, code=code, at=at)
    except MfaCodeInvalid as exc:
        _failure_record(user=user, purpose="enrollment", error=exc)
        raise


@transaction.atomic
def _verify(*, user: User, code: str, at: float | None) -> MfaMethod:
    user = _user_locked(user)
    device = MfaDevice.objects.filter(user=user, confirmed_at__isnull=False).first()
    if device is None:
        raise MfaNotEnrolled("You have no authenticator app yet: enrol one first.")
    if _looks_like_totp(code):
        step = _totp_step_accepted(device, code, at=at)
        device.last_used_step = step
        device.save(update_fields=["last_used_step"])
        method = MfaMethod.TOTP
        details: dict[str, object] = {"method": method.value}
    else:
        normalised = otp.recovery_code_normalise(code)
        if normalised is None:
            raise MfaCodeInvalid(
                "Type the 6-digit code from your authenticator app, or one of your recovery "
                "codes (like ABCD-EFGH-JKLM-NPQR).",
                method="unknown",
                reason="neither a TOTP code nor a recovery code",
            )
        recovery = (
            RecoveryCode.objects.filter(
                user=user, code_hash=otp.recovery_code_hash(normalised), used_at__isnull=True
            )
            .order_by("pk")
            .first()
        )
        if recovery is None:
            raise MfaCodeInvalid(
                "That recovery code is not valid or was already used.",
                method=MfaMethod.RECOVERY_CODE,
                reason="unknown or used recovery code",
            )
        recovery.used_at = timezone.now()
        recovery.save(update_fields=["used_at"])
        method = MfaMethod.RECOVERY_CODE
        left = RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()
        details = {"method": method.value, "recovery_codes_left": left}
    audit_event_record(
        action=MfaAction.MFA_VERIFIED,
        actor=user,
        target=user,
        target_label=user.get_username(),
        details=details,
    )
    return method


def mfa_verify(*, user: User, code: str, at: float | None = None) -> MfaMethod:
    """Check the second factor: a current TOTP code (not used before) or an unused recovery
    code, which is then spent. Returns which one passed.

    Raises MfaCodeInvalid (audited as `auth.mfa_failed`) or MfaNotEnrolled. The caller
    throttles attempts (accounts.throttle) before calling this.
    """
    try:
        return _verify(user=user, code=code, at=at)
    except MfaCodeInvalid as exc:
        _failure_record(user=user, purpose="sign_in", error=exc)
        raise


@transaction.atomic
def _recovery_codes_regenerate(*, user: User, code: str, at: float | None) -> list[str]:
    user = _user_locked(user)
    device = MfaDevice.objects.filter(user=user, confirmed_at__isnull=False).first()
    if device is None:
        raise MfaNotEnrolled("You have no authenticator app yet: enrol one first.")
    step = _totp_step_accepted(device, code, at=at)
    device.last_used_step = step
    device.save(update_fields=["last_used_step"])
    codes = _recovery_codes_replace(user)
    audit_event_record(
        action=MfaAction.MFA_RECOVERY_CODES_REGENERATED,
        actor=user,
        target=user,
        target_label=user.get_username(),
        details={"recovery_codes": len(codes)},
    )
    return codes


def mfa_recovery_codes_regenerate(*, user: User, code: str, at: float | None = None) -> list[str]:
    """Replace all of the user's recovery codes with fresh ones; needs a current TOTP code
    (a recovery code will not do: whoever holds one must not mint ten more).

    Returns the new codes in clear, to be shown once.
    """
    try:
        return _recovery_codes_regenerate(user=user, code=code, at=at)
    except MfaCodeInvalid as exc:
        _failure_record(user=user, purpose="recovery_codes_regenerate", error=exc)
        raise


@transaction.atomic
def mfa_lockout_record(*, user: User, retry_after: int) -> None:
    """Record a code refused by the lockout before it was looked at (never the code)."""
    audit_event_record(
        action=MfaAction.MFA_LOCKED,
        outcome=Outcome.DENIED,
        actor=user,
        target=user,
        target_label=user.get_username(),
        details={"limit": "user", "retry_after_seconds": retry_after},
    )


@transaction.atomic
def mfa_reset(*, actor: User | None, user: User) -> None:
    """Remove a user's authenticator and recovery codes (lost phone); audited.

    `actor` is an administrator, or None for the system (`manage.py mfa_reset`, break-glass).
    Nobody resets their own MFA this way. Every session of `user` ends at its next request
    (see the module docstring); if a role requires MFA, their next sign-in asks them to
    enrol a new authenticator.
    """
    if actor is not None and actor.pk == user.pk:
        raise MfaPolicyError(
            "You cannot reset your own multi-factor sign-in; ask another administrator."
        )
    user = _user_locked(user)
    device = MfaDevice.objects.filter(user=user).first()
    codes = RecoveryCode.objects.filter(user=user)
    code_count = codes.count()
    if device is None and code_count == 0:
        raise MfaPolicyError(f"{user.username} has no authenticator app to reset.")
    had_confirmed = device is not None and device.is_confirmed
    codes.delete()
    if device is not None:
        device.delete()
    audit_event_record(
        action=MfaAction.MFA_RESET,
        actor=actor,
        target=user,
        target_label=user.username,
        details={"confirmed_device": had_confirmed, "recovery_codes_deleted": code_count},
    )
