"""Forms for sign-in and user management. Validation only; the services do the work."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.core.validators import validate_email

from .roles import Role


class RolesField(forms.TypedMultipleChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            choices=Role.choices,
            coerce=Role,
            widget=forms.CheckboxSelectMultiple,
            **kwargs,
        )


REASON_HELP = (
    "Why (recorded in the audit log). Once two or more administrators exist, roles wait "
    "for a second administrator, who reads this."
)


class UserCreateForm(forms.Form):
    """A new account: no password here, the person sets their own through the invitation."""

    username = forms.CharField(
        max_length=150,
        validators=User._meta.get_field("username").validators,
        help_text="Letters, digits and @ . + - _ only.",
    )
    email = forms.CharField(required=False, validators=[validate_email])
    roles = RolesField()
    reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=REASON_HELP,
    )


class UserRolesForm(forms.Form):
    roles = RolesField()
    reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=REASON_HELP,
    )


class MfaCodeForm(forms.Form):
    """One code: 6 digits from the authenticator app, or a recovery code (letters and digits,
    so the keyboard is not forced to numeric)."""

    code = forms.CharField(
        label="Authentication code",
        max_length=64,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "autofocus": True,
            }
        ),
    )


class MfaTotpCodeForm(MfaCodeForm):
    """A code from the authenticator app only (confirming enrollment, new recovery codes)."""

    code = forms.CharField(
        label="Authentication code",
        max_length=64,
        help_text="The 6-digit code your authenticator app shows now.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
