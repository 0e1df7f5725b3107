"""The auditor's filter form; it only parses query parameters."""

from __future__ import annotations

from django import forms

from .models import Outcome
from .registry import audit_action_choices
from .selectors import EventFilters


def _action_choices() -> list[tuple[str, str]]:
    return [("", "any action"), *audit_action_choices()]


class EventFilterForm(forms.Form):
    since = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        required=False,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    actor = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False, choices=_action_choices)
    target_type = forms.CharField(required=False, max_length=64, label="Target type")
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    outcome = forms.ChoiceField(required=False, choices=[("", "any outcome"), *Outcome.choices])
    text = forms.CharField(required=False, max_length=100, label="Target contains")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    # Exports: the size of a tree head the auditor saved, to include a consistency proof.
    trusted_size = forms.IntegerField(
        required=False, min_value=1, label="Saved head's tree size (for a consistency proof)"
    )

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
