"""The auditor's filter form; it only parses query parameters."""

from __future__ import annotations

from typing import Any

from django import forms

from kmsportal.labels import TARGET_TYPE_LABELS, target_type_from_text
from kmsportal.widgets import utc_datetime_input

from .models import Outcome
from .registry import audit_action_choices
from .selectors import EventFilters


def _action_choices() -> list[tuple[str, str]]:
    return [("", "any action"), *audit_action_choices()]


def _target_type_choices() -> list[tuple[str, str]]:
    return [("", "any type"), *sorted(TARGET_TYPE_LABELS.items(), key=lambda item: item[1])]


class TargetTypeField(forms.ChoiceField):
    """A target type picked by its label; a typed label or internal name works too."""

    def to_python(self, value: object) -> str:
        return target_type_from_text(super().to_python(value))[:64]

    def valid_value(self, value: str) -> bool:
        # Links may name any stored type (a list of one object's events); labels are offered.
        return True


class EventFilterForm(forms.Form):
    since = forms.DateTimeField(required=False, label="From (UTC)", widget=utc_datetime_input())
    until = forms.DateTimeField(required=False, label="Until (UTC)", widget=utc_datetime_input())
    actor = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False, choices=_action_choices)
    target_type = TargetTypeField(required=False, label="Target type", choices=_target_type_choices)
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    outcome = forms.ChoiceField(required=False, choices=[("", "any outcome"), *Outcome.choices])
    text = forms.CharField(required=False, max_length=100, label="Target contains")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    # Exports: the size of a tree head the auditor saved, to include a consistency proof.
    trusted_size = forms.IntegerField(
        required=False, min_value=1, label="Saved head's tree size (for a consistency proof)"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "Until is before From: nothing can match. Swap them.")
        return data

    def filters(self) -> EventFilters:
        data = self.cleaned_data
        return EventFilters(
            since=data.get("since"),
            until=data.get("until"),
            actor=data.get("actor", ""),
            action=data.get("action", ""),
            target_type=data.get("target_type", ""),
            target_id=data.get("target_id", ""),
            outcome=data.get("outcome", ""),
            text=data.get("text", ""),
        )
