"""Audit event types written by the keyring, and the hook that records them.

The keyring sits below the audit app (audit seals its own keys with it), so it never imports
audit: the audit app connects its recorder here in its `AppConfig.ready`
(`keyring_event_recorder_set(audit_event_record)`). The keyring calls the hook inside the
transaction of the change it reports, so the event commits or rolls back with it.
"""

from __future__ import annotations

from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import models


class KeyringAction(models.TextChoices):
    REWRAPPED = "keyring.rewrapped", "Sealed data re-sealed under the primary master key"
    MIGRATED = "keyring.migrated", "Sealed data and CA keys moved into the PKCS#11 token"


class KeyringEventRecorder(Protocol):
    """Records one event in the caller's transaction (audit.services.audit_event_record)."""

    def __call__(
        self, *, action: str, target_type: str, target_label: str, details: dict[str, Any]
    ) -> object: ...


_recorder: KeyringEventRecorder | None = None


def keyring_event_recorder_set(recorder: KeyringEventRecorder | None) -> None:
    """Connect the function that records keyring events (None disconnects it)."""
    global _recorder
    _recorder = recorder


def keyring_event_record(
    *, action: KeyringAction, target_type: str, target_label: str, details: dict[str, Any]
) -> None:
    """Record one keyring event inside the caller's transaction.

    Fails closed: with no recorder connected it raises, so the change it would report rolls
    back instead of being made unaudited.
    """
    if _recorder is None:
        raise ImproperlyConfigured(
            "no audit recorder is connected to the keyring (the audit app connects it in its "
            "AppConfig.ready); refusing an unaudited keyring change"
        )
    _recorder(action=action, target_type=target_type, target_label=target_label, details=details)
