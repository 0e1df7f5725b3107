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

from kmsportal.two_person import TwoPersonChange


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


# --- separation of duties (issue 15) -------------------------------------------------------


class AccountSetup(models.Model):
    """What the person behind an account did themselves: chose their password.

    Set when they accept an invitation (accounts.invitations) or change their own password;
    cleared when an administrator issues a password-reset invitation. An account whose
    password nobody but its holder chose is one an administrator cannot be behind: only such
    accounts may approve two-person requests (accounts.approvers).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account_setup"
    )
    password_chosen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"setup of user {self.user_id}"


class Invitation(models.Model):
    """A one-time link at which a person sets their own password (new account or reset).

    Only the SHA-256 of the token is stored; the link works once, until `expires_at`, and a
    newer invitation for the same user voids older unused ones.
    """

    class Purpose(models.TextChoices):
        NEW_ACCOUNT = "new_account", "new account"
        PASSWORD_RESET = "password_reset", "password reset"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"invitation {self.pk} of user {self.user_id}"

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and self.voided_at is None and self.expires_at > timezone.now()


class RoleAssignment(models.Model):
    """When a user received a role they hold (the group membership is the role itself).

    The approver cooling-off (accounts.approvers) counts from here: a role younger than
    KMS_APPROVER_COOLING_OFF seconds lends no power to approve.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_assignments"
    )
    role = models.CharField(max_length=32)
    granted_at = models.DateTimeField(default=timezone.now)
    granted_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["user", "role"], name="accounts_one_assignment")
        ]

    def __str__(self) -> str:
        return f"{self.role} of user {self.user_id}"


class RoleGrantRequest(TwoPersonChange):
    """Privileged roles to add to a user, waiting for a second administrator."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_grant_requests"
    )
    roles = models.JSONField(default=list)  # role values to add

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(status="pending"),
                name="accounts_one_pending_role_grant",
            )
        ]

    def __str__(self) -> str:
        return f"grant {', '.join(self.roles)} to user {self.user_id} ({self.status})"


class AdministratorRemovalRequest(TwoPersonChange):
    """Taking the administrator role from another administrator, or deactivating them,
    while two or more administrators are active: it waits for a second administrator.

    Without it one administrator could bring the active administrators below two (which
    switches off the approval of role grants), make approvers alone, then restore the other.
    """

    class Change(models.TextChoices):
        DEMOTE = "demote", "remove the administrator role"
        DEACTIVATE = "deactivate", "deactivate the account"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="administrator_removal_requests",
    )
    change = models.CharField(max_length=12, choices=Change.choices)

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(status="pending"),
                name="accounts_one_pending_administrator_removal",
            )
        ]

    def __str__(self) -> str:
        return f"{self.change} administrator {self.user_id} ({self.status})"
