"""Vault forms: parse and validate input; the services decide and act."""

from __future__ import annotations

from typing import Any

from django import forms

from kmsportal.widgets import utc_datetime_input

from .lifecycle import KeyState
from .models import (
    DESTRUCTION_WAIT_DEFAULT_DAYS,
    DESTRUCTION_WAIT_MAX_DAYS,
    DESTRUCTION_WAIT_MIN_DAYS,
    KEY_NAME_PATTERN,
    ROTATION_DAYS_MAX,
    ROTATION_DAYS_MIN,
    Algorithm,
    ExportPolicy,
)

DATETIME_WIDGET = utc_datetime_input()


class KeyFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *KeyState.choices])
    q = forms.CharField(required=False, max_length=100, label="Name contains")
    overdue = forms.BooleanField(required=False, label="Rotation overdue")
    due_within = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=ROTATION_DAYS_MAX,
        label="Rotation due within (days)",
        help_text="Active keys whose next rotation falls in the next N days (not yet overdue).",
    )
    after = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)


class KeyCreateForm(forms.Form):
    name = forms.RegexField(
        regex=KEY_NAME_PATTERN,
        max_length=100,
        help_text="Lowercase letters, digits, '-', '_' and '.'; clients ask for the key by this name.",
        error_messages={
            "invalid": "Use lowercase letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit."
        },
    )
    key_type = forms.ChoiceField(
        required=False,
        label="Type",
        choices=[(choice.value.lower(), choice.label) for choice in Algorithm],
        initial="aes-256-gcm",
        help_text="What the key does; clients use it through the operations API or fetch it.",
    )
    description = forms.CharField(
        required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )
    required_context_keys = forms.CharField(
        required=False,
        max_length=2000,
        label="Required encryption context",
        help_text="Comma-separated entry names every encrypt and decrypt must carry.",
    )
    allow_compromised_decrypt = forms.BooleanField(
        required=False,
        label="Versions reported compromised may still decrypt (audited)",
    )
    rotation_period_days = forms.IntegerField(
        required=False,
        min_value=ROTATION_DAYS_MIN,
        max_value=ROTATION_DAYS_MAX,
        label="Rotate every (days)",
        help_text="Leave empty for manual rotation only.",
    )
    activate_at = forms.DateTimeField(
        required=False,
        label="Activate at (UTC)",
        widget=DATETIME_WIDGET,
        help_text="Leave empty to activate now.",
    )

    def clean_key_type(self) -> str:
        return self.cleaned_data["key_type"] or "aes-256-gcm"

    def clean_required_context_keys(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["required_context_keys"].split(",")]


class RotateForm(forms.Form):
    min_decryption_version = forms.IntegerField(
        required=False,
        min_value=1,
        label="Minimum decryption version",
        help_text="Optional: versions below this can no longer decrypt or be distributed.",
    )


class CompromiseForm(forms.Form):
    scope = forms.ChoiceField(
        choices=[("version", "One version"), ("key", "The whole key (every version)")],
        widget=forms.RadioSelect,
        initial="version",
    )
    version = forms.IntegerField(
        required=False, min_value=1, help_text="Which version (for one version)."
    )
    reason = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 3}))
    compromised_at = forms.DateTimeField(
        required=False,
        label="Compromised since (UTC)",
        widget=DATETIME_WIDGET,
        help_text="When the compromise began, if known (may be in the past). Empty: now.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        if data.get("scope") == "version" and not data.get("version"):
            self.add_error("version", "Say which version is compromised.")
        return data


class DestructionRequestForm(forms.Form):
    waiting_days = forms.IntegerField(
        min_value=DESTRUCTION_WAIT_MIN_DAYS,
        max_value=DESTRUCTION_WAIT_MAX_DAYS,
        initial=DESTRUCTION_WAIT_DEFAULT_DAYS,
        label="Waiting period (days)",
        help_text=(
            f"{DESTRUCTION_WAIT_MIN_DAYS}-{DESTRUCTION_WAIT_MAX_DAYS} days between approval and "
            "erasure; the key is unusable meanwhile and the destruction can be cancelled."
        ),
    )
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why; the custodian who approves reads it.",
    )


class ExportPolicyForm(forms.Form):
    policy = forms.ChoiceField(choices=ExportPolicy.choices, label="Export policy")
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why; a weaker policy waits for a second key custodian, who reads it.",
    )


class KeyImportParametersForm(forms.Form):
    name = forms.RegexField(
        regex=KEY_NAME_PATTERN,
        max_length=100,
        label="Key name",
        help_text="An existing active key gets a new primary version; a new name becomes a new key.",
        error_messages={
            "invalid": "Use lowercase letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit."
        },
    )
    key_size = forms.TypedChoiceField(
        choices=[(3072, "RSA 3072"), (4096, "RSA 4096")],
        coerce=int,
        initial=3072,
        label="Wrapping key",
    )


class KeyImportForm(forms.Form):
    name = forms.RegexField(regex=KEY_NAME_PATTERN, max_length=100, label="Key name")
    import_token = forms.CharField(
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="The import token shown (or written to import-token) with the wrapping key.",
    )
    wrapped_key = forms.FileField(
        label="Wrapped key material",
        help_text="RSA_AES_KEY_WRAP_SHA_256: the RSA-OAEP block followed by the AES key wrap.",
    )
