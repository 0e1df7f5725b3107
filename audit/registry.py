"""Every audit event type, from every app, in one registry.

Each app owns its event types as a `TextChoices` class (audit.models.AuditAction,
vault.events.VaultAction, pki.events.PkiAction, ...) and registers it in its `ready()`. The
recorder refuses unregistered types, the auditor's filter offers all of them, and a test
checks that the README lists each one.
"""

from __future__ import annotations

from django.db import models

_classes: list[type[models.TextChoices]] = []
_labels: dict[str, str] = {}


def audit_actions_register(choices: type[models.TextChoices]) -> None:
    """Make an app's event types known (idempotent; a value may belong to one class only)."""
    if choices in _classes:
        return
    for value, label in choices.choices:
        if value in _labels:
            raise ValueError(f"audit event type {value!r} is registered twice")
        _labels[value] = label
    _classes.append(choices)


def audit_action_choices() -> list[tuple[str, str]]:
    """(value, label) of every registered event type, sorted by value."""
    return sorted(_labels.items())


def audit_action_label(value: str) -> str:
    return _labels.get(value, value)


def audit_action_is_registered(value: str) -> bool:
    return value in _labels


def audit_action_classes() -> tuple[type[models.TextChoices], ...]:
    return tuple(_classes)
