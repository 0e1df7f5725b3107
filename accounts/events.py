"""Audit event types written by multi-factor sign-in (accounts.mfa).

The other sign-in and user events live in audit.models.AuditAction; these follow their
`auth.<what>` naming and are registered by AccountsConfig.ready().
"""

from django.db import models


class MfaAction(models.TextChoices):
    MFA_ENROLLED = "auth.mfa_enrolled", "Enrolled an authenticator app (TOTP)"
    MFA_VERIFIED = "auth.mfa_verified", "Multi-factor verification passed"
    MFA_FAILED = "auth.mfa_failed", "Multi-factor verification failed"
    MFA_LOCKED = "auth.mfa_locked", "Multi-factor verification refused: too many failures"
    MFA_RECOVERY_CODES_REGENERATED = (
        "auth.mfa_recovery_codes_regenerated",
        "Recovery codes regenerated",
    )
    MFA_RESET = "auth.mfa_reset", "Multi-factor sign-in reset by an administrator"


class AccountAction(models.TextChoices):
    """Invitations and privileged role grants (issue 15, docs/separation-of-duties.md)."""

    INVITATION_ISSUED = "user.invitation_issued", "Invitation link issued"
    INVITATION_ACCEPTED = "user.invitation_accepted", "Invitation accepted: own password set"
    ROLE_GRANT_REQUESTED = "user.role_grant_requested", "Privileged role grant requested"
    ROLE_GRANT_APPROVED = "user.role_grant_approved", "Privileged role grant approved"
    ROLE_GRANT_REJECTED = "user.role_grant_rejected", "Privileged role grant rejected"
    ROLE_GRANT_WITHDRAWN = "user.role_grant_withdrawn", "Privileged role grant withdrawn"
    ROLE_GRANT_EXPIRED = "user.role_grant_expired", "Privileged role grant expired undecided"
    ADMIN_REMOVAL_REQUESTED = (
        "user.admin_removal_requested",
        "Demoting or deactivating an administrator requested",
    )
    ADMIN_REMOVAL_APPROVED = (
        "user.admin_removal_approved",
        "Demoting or deactivating an administrator approved",
    )
    ADMIN_REMOVAL_REJECTED = (
        "user.admin_removal_rejected",
        "Demoting or deactivating an administrator rejected",
    )
    ADMIN_REMOVAL_WITHDRAWN = (
        "user.admin_removal_withdrawn",
        "Demoting or deactivating an administrator withdrawn",
    )
    ADMIN_REMOVAL_EXPIRED = (
        "user.admin_removal_expired",
        "Demoting or deactivating an administrator expired undecided",
    )
