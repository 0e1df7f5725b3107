"""Audit event types written by the keyring."""

from django.db import models


class KeyringAction(models.TextChoices):
    REWRAPPED = "keyring.rewrapped", "Sealed data re-sealed under the primary master key"
    MIGRATED = "keyring.migrated", "Sealed data and CA keys moved into the PKCS#11 token"
