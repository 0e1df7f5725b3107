"""Form widgets shared by the apps' forms."""

from __future__ import annotations

from django import forms

#: What the UTC time fields show and accept first (Django also takes other ISO 8601 forms).
UTC_INPUT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_datetime_input() -> forms.DateTimeInput:
    """A time in UTC typed as ISO 8601 text. Not `datetime-local`: browsers show that in the
    viewer's locale (AM/PM) and time zone, while every time in the portal is UTC."""
    return forms.DateTimeInput(
        attrs={"placeholder": "2026-12-01T13:00Z", "spellcheck": "false", "autocomplete": "off"},
        format=UTC_INPUT_FORMAT,
    )
