"""Personal API tokens: what a person hands to a script so it may call the admin API as them.

Only a SHA-256 hash of each token is stored. The token carries 256 bits from the CSPRNG, so a
fast hash is enough: a slow password hash protects secrets people choose (few bits), and no
amount of hashing speed makes 2**256 guesses feasible. The ``prefix`` (random, not secret) finds
the row; the hash is then compared in constant time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenScope(models.TextChoices):
    READ_ONLY = "read-only", "Read only"
    ROLES = "roles", "My roles (read and change)"


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=12, choices=TokenScope.choices)
    # What the token was made under: a password reset or a reset of the second factor ends
    # the token as it ends the user's sessions (SHA-256 of Django's session auth hash, and
    # the authenticator the creating session was verified with).
    credential_hash = models.CharField(max_length=64)
    mfa_device_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.name} (kms_{self.prefix}_…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def writes(self) -> bool:
        return self.scope == TokenScope.ROLES
