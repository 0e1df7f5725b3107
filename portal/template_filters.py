"""Template filters every page can use without `{% load %}` (TEMPLATES builtins).

- `utc`: the one date-time format of the portal, ISO 8601 in UTC: ``2026-12-01T13:20:05Z``
  (``|utc:"date"`` gives ``2026-12-01``). Empty for None, so ``|default:"—"`` still works.
- `action_label`, `role_label`, `target_type_label`: the human labels of audit event types,
  roles and audit target types, for pages that hold the raw codes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from django import template

from kmsportal.labels import target_type_label

register = template.Library()

#: The portal's date-time format (ISO 8601, UTC, whole seconds); also settings' formats.
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_text(value: datetime | date | None, part: str = "") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        if part == "date":
            return value.strftime("%Y-%m-%d")
        if part == "micro":  # the audit log's precision
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.strftime(UTC_FORMAT)
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    return str(value)


@register.filter(name="utc")
def utc(value: datetime | date | None, part: str = "") -> str:
    """``2026-12-01T13:20:05Z`` (``"date"``: ``2026-12-01``; ``"micro"``: with microseconds)."""
    return utc_text(value, part)


@register.filter
def action_label(value: str) -> str:
    from audit.registry import audit_action_label

    return audit_action_label(str(value))


@register.filter
def role_label(value: str) -> str:
    from accounts.roles import Role

    try:
        return str(Role(value).label)
    except ValueError:
        return str(value)


@register.filter(name="target_type_label")
def target_type_label_filter(value: str) -> str:
    return target_type_label(str(value))
