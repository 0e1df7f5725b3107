"""PKI forms: parse and size-check input; the services decide and act.

Uploads and pasted text are limited to 64 KiB (CSRs, certificates) or 1 MiB (chains) here,
before anything is parsed, with a message that says so.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from kmsportal.widgets import utc_datetime_input

from .models import (
    CA_DAYS_MAX,
    CA_NAME_MESSAGE,
    CA_NAME_PATTERN,
    CHAIN_UPLOAD_MAX_BYTES,
    KEY_TYPE_CHOICES,
    LEAF_DAYS_MAX,
    UPLOAD_MAX_BYTES,
    CertificateStatus,
)
from .revocation import INVALIDITY_DATE_REASONS, REVOCATION_REASONS

SUBJECT_HELP = (
    "Most specific attribute first, e.g. <code>CN=www.example.org,O=Example Org,C=DE</code>. "
    "Attributes: CN, O, OU, C, L, ST, emailAddress, serialNumber; escape a comma inside a "
    "value as <code>\\,</code>. Any language's letters work."
)
SANS_HELP = (
    "One per line: <code>dns:www.example.org</code>, <code>ip:192.0.2.10</code>, "
    "<code>email:alice@example.org</code>, <code>uri:https://example.org/</code>."
)


def _size_problem(size: int, limit: int, what: str) -> str | None:
    if size > limit:
        return (
            f"the {what} is {size:,} bytes; at most {limit:,} bytes ({limit // 1024} KiB) are "
            "accepted"
        )
    return None


def _text_or_file(
    form: forms.Form, text_field: str, file_field: str, *, limit: int, what: str, required: bool
) -> bytes | None:
    """The bytes of a pasted text or an uploaded file (not both), size-checked."""
    text: str = form.cleaned_data.get(text_field) or ""
    upload: UploadedFile[bytes] | None = form.cleaned_data.get(file_field)
    if text.strip() and upload is not None:
        form.add_error(file_field, f"Paste the {what} or upload a file, not both.")
        return None
    if upload is not None:
        problem = _size_problem(upload.size or 0, limit, f"uploaded {what}")
        if problem:
            form.add_error(file_field, problem[0].upper() + problem[1:] + ".")
            return None
        content: bytes = upload.read()
        return content
    if text.strip():
        data = text.encode("utf-8")
        problem = _size_problem(len(data), limit, f"pasted {what}")
        if problem:
            form.add_error(text_field, problem[0].upper() + problem[1:] + ".")
            return None
        return data
    if required:
        form.add_error(text_field, f"Paste the {what} or upload a file.")
    return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- certificate authorities -----------------------------------------------------------------


def _choice_field(form: forms.Form, name: str) -> forms.ChoiceField:
    """A choice field of ``form`` whose choices are set per request (form.fields holds them
    as plain Fields for the type checker)."""
    return cast(forms.ChoiceField, form.fields[name])


class CACreateForm(forms.Form):
    name = forms.RegexField(
        regex=CA_NAME_PATTERN,
        max_length=64,
        help_text="Used in URLs (CRL, CA certificate, OCSP) written into every certificate.",
        error_messages={"invalid": CA_NAME_MESSAGE},
    )
    subject = forms.CharField(max_length=1024, help_text=SUBJECT_HELP)
    parent = forms.ChoiceField(
        required=False,
        label="Parent CA",
        help_text="Empty: a self-signed root. Otherwise an intermediate signed by this CA.",
    )
    key_type = forms.ChoiceField(choices=KEY_TYPE_CHOICES, initial="rsa3072")
    days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=CA_DAYS_MAX,
        label="Validity (days)",
        help_text="Empty: 3650 for a root, 1825 for an intermediate (never past its parent).",
    )
    path_length = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=10,
        help_text="How many intermediate CAs may follow below. Empty: no limit for a root, "
        "0 for an intermediate (it issues end-entity certificates only).",
    )

    def __init__(self, *args: Any, parents: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "parent").choices = [("", "none: a self-signed root"), *parents]
        # Most new CAs are intermediates under the deployment's root: offer that first.
        names = [name for name, _ in parents]
        if settings.KMS_ROOT_CA_NAME in names:
            self.fields["parent"].initial = settings.KMS_ROOT_CA_NAME


class CADisableForm(forms.Form):
    reason = forms.CharField(
        required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )


# --- certificate list ------------------------------------------------------------------------


class CertificateFilterForm(forms.Form):
    ca = forms.ChoiceField(required=False, label="CA")
    profile = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False, choices=[("", "any status"), *CertificateStatus.choices]
    )
    expiring = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expiring within (days)"
    )
    validity = forms.ChoiceField(
        required=False,
        # "unexpired": notAfter still ahead; "expired": notAfter passed (see certificate_page).
        choices=[("", "expired or not"), ("unexpired", "not expired"), ("expired", "expired")],
        label="Validity period",
    )
    expires_after = forms.DateField(
        required=False,
        label="Expires on or after (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    expires_before = forms.DateField(
        required=False,
        label="Expires before (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    q = forms.CharField(required=False, max_length=200, label="Subject, SAN or serial")
    after = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(
        self,
        *args: Any,
        cas: list[tuple[str, str]],
        profiles: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "ca").choices = [("", "any CA"), *cas]
        _choice_field(self, "profile").choices = [("", "any profile"), *profiles]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        start, end = data.get("expires_after"), data.get("expires_before")
        if start and end and end <= start:
            self.add_error("expires_before", "Choose a day after the “on or after” day.")
        return data


# --- issuance --------------------------------------------------------------------------------


class _IssueBase(forms.Form):
    ca = forms.ChoiceField(label="Issuing CA")
    profile = forms.ChoiceField()
    days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=LEAF_DAYS_MAX,
        label="Validity (days)",
        help_text="Empty: the profile's maximum. Never past the CA's own expiry.",
    )

    def __init__(
        self,
        *args: Any,
        cas: list[tuple[str, str]],
        profiles: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # One CA: it is the default. Several: the operator chooses (no silent default).
        _choice_field(self, "ca").choices = (
            cas if len(cas) <= 1 else [("", "choose the issuing CA"), *cas]
        )
        _choice_field(self, "profile").choices = profiles


class CSRRequestForm(_IssueBase):
    """Step 1: the CSR, pasted or uploaded, and where and how to sign it."""

    csr_text = forms.CharField(
        required=False,
        label="CSR (PEM)",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="Paste -----BEGIN CERTIFICATE REQUEST----- … or upload a PEM or DER file.",
    )
    csr_file = forms.FileField(required=False, label="or upload a CSR file (at most 64 KiB)")

    field_order = ["csr_text", "csr_file", "ca", "profile", "days"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        data["csr_data"] = _text_or_file(
            self, "csr_text", "csr_file", limit=UPLOAD_MAX_BYTES, what="CSR", required=True
        )
        return data


class CSRReviewForm(_IssueBase):
    """Step 2: what will be signed; subject and SANs may be changed. The CSR travels as PEM
    in a hidden field and is checked again on every step."""

    csr_pem = forms.CharField(widget=forms.HiddenInput, max_length=UPLOAD_MAX_BYTES * 2)
    subject = forms.CharField(
        required=False,
        max_length=1024,
        help_text=SUBJECT_HELP + " Empty: no subject (then a SAN is required).",
    )
    sans = forms.CharField(
        required=False,
        label="Subject alternative names",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=SANS_HELP,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        data["san_lines"] = _lines(data.get("sans") or "")
        return data


class GeneratedRequestForm(_IssueBase):
    """Step 1 of a server-generated key pair: the certificate's content."""

    subject = forms.CharField(required=False, max_length=1024, help_text=SUBJECT_HELP)
    sans = forms.CharField(
        required=False,
        label="Subject alternative names",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=SANS_HELP,
    )
    key_type = forms.ChoiceField(choices=KEY_TYPE_CHOICES, initial="rsa2048")

    field_order = ["ca", "profile", "subject", "sans", "key_type", "days"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        data["san_lines"] = _lines(data.get("sans") or "")
        return data


class GeneratedIssueForm(GeneratedRequestForm):
    """Step 2: the password that protects the download (typed twice, never shown again)."""

    password1 = forms.CharField(
        label="PKCS#12 password",
        strip=False,
        min_length=8,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters. The file cannot be opened without it; it is not "
        "stored anywhere.",
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    delivery = forms.ChoiceField(
        choices=[
            ("pkcs12", "PKCS#12 file (.p12): key, certificate and CA chain"),
            ("pem", "PEM bundle (.pem): encrypted key, certificate and CA chain"),
        ],
        initial="pkcs12",
        widget=forms.RadioSelect,
        label="Download as",
    )

    # A random token per confirmation page: the same form submitted twice issues once
    # (pki.generated_delivery).
    idempotency_token = forms.CharField(
        widget=forms.HiddenInput, min_length=16, max_length=64, required=True
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        first, second = data.get("password1"), data.get("password2")
        if first and second is not None and first != second:
            self.add_error("password2", "The two passwords differ.")
        return data


# --- validation ------------------------------------------------------------------------------


class ValidationForm(forms.Form):
    certificate_text = forms.CharField(
        required=False,
        label="Certificate (PEM)",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
    )
    certificate_file = forms.FileField(
        required=False, label="or upload a certificate (PEM or DER, at most 64 KiB)"
    )
    chain_text = forms.CharField(
        required=False,
        label="Chain (PEM, optional)",
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        help_text="Intermediate certificates; this PKI's own CAs are always known.",
    )
    chain_file = forms.FileField(required=False, label="or upload a chain (PEM, at most 1 MiB)")
    purpose = forms.ChoiceField(
        choices=[
            ("server", "TLS server"),
            ("client", "TLS client"),
            ("any", "any purpose"),
        ],
        initial="server",
    )
    hostname = forms.CharField(
        required=False, max_length=253, help_text="Optional: a DNS name or IP address to match."
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        data["certificate_data"] = _text_or_file(
            self,
            "certificate_text",
            "certificate_file",
            limit=UPLOAD_MAX_BYTES,
            what="certificate",
            required=True,
        )
        data["chain_data"] = _text_or_file(
            self,
            "chain_text",
            "chain_file",
            limit=CHAIN_UPLOAD_MAX_BYTES,
            what="chain",
            required=False,
        )
        return data


# --- revocation ------------------------------------------------------------------------------

DATETIME_INPUT_FORMATS = [
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
]


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        choices=[(r.value, f"{r.label} ({r.value})") for r in REVOCATION_REASONS],
        initial="unspecified",
        help_text="RFC 5280 reason. <em>Certificate hold</em> is the only one that can be "
        "undone (released); every other revocation is final.",
    )
    invalidity_date = forms.DateTimeField(
        required=False,
        input_formats=DATETIME_INPUT_FORMATS,
        label="Invalidity date (UTC, optional)",
        widget=utc_datetime_input(),
        help_text="Only with "
        + " or ".join(sorted(r.label.lower() for r in INVALIDITY_DATE_REASONS))
        + ": since when the private key is known or suspected to be compromised.",
    )


class CARevocationRequestForm(RevokeForm):
    """The revoke form for a CA's certificate: the revocation waits for a second person."""

    comment = forms.CharField(
        required=False,
        max_length=1000,
        label="Why (for the approver)",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why this CA must go; shown to whoever approves or rejects the request. "
        "Required before the request is made: a blank reason is refused.",
    )


class CARevocationDecisionForm(forms.Form):
    """Approve, reject (with an optional comment) or withdraw a CA revocation request."""

    comment = forms.CharField(required=False, max_length=1000, label="Comment (optional)")
