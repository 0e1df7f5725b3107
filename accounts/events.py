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
