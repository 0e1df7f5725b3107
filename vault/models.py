"""Symmetric keys, their versions, and two-person destruction requests.

Key material exists only sealed (`KeyVersion.sealed_material`, AES-256-GCM under the master
keyring, AAD naming the key and the version number). Destruction erases that column; the
rows, their fingerprints and the audit trail stay.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from .lifecycle import KeyState, VersionState

KEY_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-_.]{0,98}[a-z0-9])?$"
ROTATION_DAYS_MIN = 1
ROTATION_DAYS_MAX = 3650
DESTRUCTION_WAIT_MIN_DAYS = 7
DESTRUCTION_WAIT_MAX_DAYS = 30
DESTRUCTION_WAIT_DEFAULT_DAYS = 30
DESTRUCTION_REQUEST_TTL = timedelta(hours=24)


class Algorithm(models.TextChoices):
    AES_256_GCM = "AES-256-GCM", "AES-256-GCM"


class SymmetricKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[
            RegexValidator(
                KEY_NAME_PATTERN,
                "Use 1-100 lowercase letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit.",
            )
        ],
    )
    description = models.TextField(blank=True, max_length=1000)
    algorithm = models.CharField(
        max_length=20, choices=Algorithm.choices, default=Algorithm.AES_256_GCM
    )
    state = models.CharField(max_length=24, choices=KeyState.choices, default=KeyState.PRE_ACTIVE)
    rotation_period_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(ROTATION_DAYS_MIN), MaxValueValidator(ROTATION_DAYS_MAX)],
    )
    # Versions below this number may not be used to decrypt any more (nor be distributed).
    min_decryption_version = models.PositiveIntegerField(default=1)
    activate_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    next_rotation_at = models.DateTimeField(null=True, blank=True, db_index=True)
    compromised_at = models.DateTimeField(null=True, blank=True)
    compromise_reason = models.TextField(blank=True)
    # Pending destruction: when it becomes due, and where a cancel returns to.
    destroy_after = models.DateTimeField(null=True, blank=True, db_index=True)
    state_before_destruction = models.CharField(max_length=24, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("rotate_symmetrickey", "Can rotate keys"),
            ("suspend_symmetrickey", "Can activate, suspend, resume and deactivate keys"),
            ("compromise_symmetrickey", "Can report keys compromised"),
            ("destroy_symmetrickey", "Can request, approve and cancel key destruction"),
        ]
        indexes = [models.Index(fields=["state", "name"], name="vault_key_state_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_destroyed(self) -> bool:
        return self.state in (KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED)

    @property
    def rotation_overdue(self) -> bool:
        return (
            self.state == KeyState.ACTIVE
            and self.next_rotation_at is not None
            and self.next_rotation_at <= timezone.now()
        )


class KeyVersion(models.Model):
    key = models.ForeignKey(SymmetricKey, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    # AES-256-GCM blob from kmsportal.crypto.envelope; NULL once destroyed (crypto-shredded).
    sealed_material = models.BinaryField(null=True)
    # Key check value: first 3 bytes of AES-256-ECB(key, 0^128), the classic KCV that HSMs
    # print, so a custodian can compare with another system without revealing the key.
    fingerprint = models.CharField(max_length=16)
    state = models.CharField(max_length=24, choices=VersionState.choices)
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    compromised_at = models.DateTimeField(null=True, blank=True)
    compromise_reason = models.TextField(blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key", "-number"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["key", "number"], name="vault_version_unique_number"),
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(is_primary=True), name="vault_one_primary"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key.name} v{self.number}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed material to this key and version number."""
        return f"vault.KeyVersion:{self.key_id}:{self.number}".encode()

    @property
    def is_destroyed(self) -> bool:
        return self.state in (VersionState.DESTROYED, VersionState.DESTROYED_COMPROMISED)


class DestructionRequest(models.Model):
    """The first half of the two-person rule: one custodian asks, a different one approves."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved", "approved"
        REJECTED = "rejected", "rejected"
        WITHDRAWN = "withdrawn", "withdrawn"

    key = models.ForeignKey(
        SymmetricKey, on_delete=models.PROTECT, related_name="destruction_requests"
    )
    waiting_days = models.PositiveSmallIntegerField(
        validators=[
            MinValueValidator(DESTRUCTION_WAIT_MIN_DAYS),
            MaxValueValidator(DESTRUCTION_WAIT_MAX_DAYS),
        ]
    )
    reason = models.TextField(blank=True, max_length=1000)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(status="pending"),
                name="vault_one_pending_destruction_request",
            )
        ]

    def __str__(self) -> str:
        return f"destroy {self.key.name} ({self.get_status_display()})"

    @property
    def is_expired(self) -> bool:
        return self.status == self.Status.PENDING and self.expires_at <= timezone.now()
