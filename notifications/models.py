"""Who is told about what expires, and what was already told (so that nothing is repeated).

* :class:`Watcher`: an extra recipient (email address) for the certificates of one CA, of one
  profile, or one certificate. Active CA operators (certificates) and key custodians (keys)
  with an email address are recipients by default, without a row here.
* :class:`Notice`: one item (a certificate entering an expiry window, a key whose rotation
  is due) reported once to one recipient: the next run does not report it again.
* :class:`Digest`: one message per recipient per day; the unique constraint makes
  ``notify_expiring`` idempotent (a second run the same day sends nothing).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class WatchScope(models.TextChoices):
    CA = "ca", "every certificate of a CA"
    PROFILE = "profile", "every certificate of a profile"
    CERTIFICATE = "certificate", "one certificate"


class Watcher(models.Model):
    email = models.EmailField()
    scope = models.CharField(max_length=16, choices=WatchScope.choices)
    ca = models.ForeignKey(
        "pki.CertificateAuthority", null=True, blank=True, on_delete=models.CASCADE
    )
    profile = models.CharField(max_length=32, blank=True)
    certificate = models.ForeignKey(
        "pki.Certificate", null=True, blank=True, on_delete=models.CASCADE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["email", "id"]
        default_permissions = ("view",)
        permissions = [("manage_watcher", "Can add and remove expiry watchers")]

    def __str__(self) -> str:
        return f"{self.email} watches {self.target_label}"

    @property
    def target_label(self) -> str:
        if self.scope == WatchScope.CA and self.ca is not None:
            return f"CA {self.ca.name}"
        if self.scope == WatchScope.PROFILE:
            return f"profile {self.profile}"
        if self.certificate is not None:
            return f"certificate {self.certificate.serial_number_display}"
        return self.scope


class Notice(models.Model):
    """An item reported to a recipient: ``key`` names the item and its window."""

    recipient = models.CharField(max_length=320)
    key = models.CharField(max_length=200)
    reported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["recipient", "key"], name="notifications_notice_once")
        ]

    def __str__(self) -> str:
        return f"{self.key} reported to {self.recipient}"


class Digest(models.Model):
    recipient = models.CharField(max_length=320)
    day = models.DateField()
    items = models.PositiveIntegerField()
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["recipient", "day"], name="notifications_digest_daily")
        ]

    def __str__(self) -> str:
        return f"digest of {self.day} to {self.recipient}"
