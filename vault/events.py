"""Audit event types written by the vault (listed in the README)."""

from django.db import models


class VaultAction(models.TextChoices):
    KEY_CREATED = "key.created", "Key created"
    KEY_ACTIVATED = "key.activated", "Key activated"
    KEY_ROTATED = "key.rotated", "Key rotated"
    KEY_SUSPENDED = "key.suspended", "Key suspended"
    KEY_RESUMED = "key.resumed", "Key resumed"
    KEY_DEACTIVATED = "key.deactivated", "Key deactivated"
    KEY_COMPROMISED = "key.compromised", "Key reported compromised"
    KEY_VERSION_COMPROMISED = "key.version_compromised", "Key version reported compromised"
    KEY_DESTRUCTION_REQUESTED = "key.destruction_requested", "Key destruction requested"
    KEY_DESTRUCTION_APPROVED = "key.destruction_approved", "Key destruction approved (scheduled)"
    KEY_DESTRUCTION_REJECTED = "key.destruction_rejected", "Key destruction request rejected"
    KEY_DESTRUCTION_WITHDRAWN = "key.destruction_withdrawn", "Key destruction request withdrawn"
    KEY_DESTRUCTION_CANCELLED = "key.destruction_cancelled", "Key destruction cancelled"
    KEY_DESTROYED = "key.destroyed", "Key destroyed (material erased)"
    KEY_INTEGRITY_CHECKED = "key.integrity_checked", "Key material integrity checked"
    KEY_INTEGRITY_FAILED = "key.integrity_failed", "Key material failed its integrity check"
