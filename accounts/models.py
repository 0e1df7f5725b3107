"""Accounts use Django's own `auth.User`; roles are `auth.Group`s named after `Role`.

Multi-factor sign-in adds one authenticator (TOTP) per user and their one-time recovery
codes. The TOTP secret exists only sealed under the master keyring; recovery codes only as
hashes.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class MfaDevice(models.Model):
    """A user's authenticator app: the TOTP secret they scanned, sealed.

    A device is unconfirmed (`confirmed_at` NULL) from the moment the enrollment page shows
    its secret until the user types a first correct code; only a confirmed device counts for
    signing in. `last_used_step` is the latest TOTP time step accepted: a code for that step
    or an earlier one is refused, so a code cannot be replayed (RFC 6238 section 5.2).
    """

    # A UUID, known before the row is saved, so the secret can be sealed to this row's id.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa_device"
    )
    # kmsportal.crypto.envelope blob of the 20-byte TOTP secret, bound to `aad`.
    sealed_secret = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_used_step = models.BigIntegerField(default=-1)

    class Meta:
        # Nobody manages devices by permission: users enrol their own, administrators reset.
        default_permissions = ()

    def __str__(self) -> str:
        return f"authenticator of user {self.user_id}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed secret to this device row and its user."""
        return f"accounts.MfaDevice:{self.id}:{self.user_id}:totp".encode()

    @property
    def is_confirmed(self) -> bool:
        return self.confirmed_at is not None


class RecoveryCode(models.Model):
    """One single-use recovery code, stored as kmsportal.crypto.otp.recovery_code_hash."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa_recovery_codes"
    )
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["user", "code_hash"], name="accounts_recovery_code_unique_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"recovery code {self.pk} of user {self.user_id}"
