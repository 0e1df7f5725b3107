"""Forms for sign-in and user management. Validation only; the services do the work."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import password_validators_help_text_html
from django.core.validators import validate_email

from .roles import Role


class RolesField(forms.TypedMultipleChoiceField):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            choices=Role.choices,
            coerce=Role,
            widget=forms.CheckboxSelectMultiple,
            **kwargs,
        )


class PasswordChoiceForm(forms.Form):
    """Either a random password shown once, or one the administrator types twice."""

    password_mode = forms.ChoiceField(
        choices=[("random", "Generate a random password (shown once)"), ("set", "Set it myself")],
        initial="random",
        widget=forms.RadioSelect,
    )
    password1 = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("password_mode") == "set":
            if not data.get("password1"):
                self.add_error("password1", "Type the password, or choose a random one.")
            elif data.get("password1") != data.get("password2"):
                self.add_error("password2", "The two passwords differ.")
        return data

    def chosen_password(self) -> str | None:
        """The typed password, or None for a random one."""
        if self.cleaned_data["password_mode"] == "set":  # noqa: S105 (a mode, not a password)
            return self.cleaned_data["password1"]
        return None


class UserCreateForm(PasswordChoiceForm):
    username = forms.CharField(
        max_length=150,
        validators=User._meta.get_field("username").validators,
        help_text="Letters, digits and @ . + - _ only.",
    )
    email = forms.CharField(required=False, validators=[validate_email])
    roles = RolesField()

    field_order = ["username", "email", "roles", "password_mode", "password1", "password2"]


class UserRolesForm(forms.Form):
    roles = RolesField()


class PasswordResetForm(PasswordChoiceForm):
    pass


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
