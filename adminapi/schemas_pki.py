"""Request and response bodies of the PKI endpoints (`adminapi.routers.pki` and `.certificates`).

Inputs are checked here as the portal's forms check them (sizes, ranges, choices), so a bad
value is a 422 problem document naming the field before any service runs; the services then
decide as they do for the portal. Outputs carry what the portal pages show, never a CA's
key: the one private key that leaves is the generated one, inside the PKCS#12 (or encrypted
PEM) the caller protects with its own password.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, get_args

from ninja import Field, Schema

from kmsportal.crypto.x509 import KeyType
from pki.models import (
    CA_DAYS_MAX,
    CA_NAME_PATTERN,
    CHAIN_UPLOAD_MAX_BYTES,
    LEAF_DAYS_MAX,
    UPLOAD_MAX_BYTES,
)
from pki.revocation import REVOCATION_REASONS

from .schemas import MAX_ID, Instant

KeyTypeName = Literal["rsa2048", "rsa3072", "rsa4096", "ecp256", "ecp384"]
assert set(get_args(KeyTypeName)) == {k.value for k in KeyType}

#: The reasons an operator may choose (RFC 5280 5.3.1 names): every CRLReason but
#: removeFromCRL (delta CRLs only) and aACompromise (attribute certificates).
ReasonName = Literal[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
]
assert set(get_args(ReasonName)) == {r.value for r in REVOCATION_REASONS}


def _ca_name(description: str = "The CA's name (as in its URLs).") -> Any:
    return Field(pattern=CA_NAME_PATTERN, max_length=64, description=description)


# Pasted PEM text: the portal's limits (64 KiB for a CSR or certificate, 1 MiB for a chain).
PEM_MAX = UPLOAD_MAX_BYTES
CHAIN_MAX = CHAIN_UPLOAD_MAX_BYTES


# --- certificate authorities -----------------------------------------------------------------


class CAOut(Schema):
    name: str
    subject: str
    parent: str | None = Field(description="The issuing CA's name; null for a root.")
    is_root: bool
    key_type: str
    state: Literal["active", "disabled", "revoked"]
    serial: str = Field(description="Upper-case hex, as openssl prints it.")
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    path_length: int | None
    server_identity: bool
    disabled_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: str
    created_by: str
    created_at: datetime


class CARevocationRequestOut(Schema):
    id: int
    ca: str
    certificate_id: int
    serial: str
    reason: str
    invalidity_date: datetime | None
    comment: str
    status: Literal["pending", "approved", "rejected", "withdrawn", "expired"]
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str
    decided_at: datetime | None
    decision_comment: str


class CADetailOut(CAOut):
    certificate_pem: str
    chain_pem: str = Field(description="This CA's certificate followed by its ancestors'.")
    certificate_id: int | None = Field(
        description="An intermediate's own certificate, as its parent issued it (the one a "
        "CA revocation request names); null for a root."
    )
    children: list[str]
    issued_count: int
    crl_url: str
    delta_crl_url: str
    ocsp_url: str
    ca_issuers_url: str
    revocation_requests: list[CARevocationRequestOut]


class CACreateIn(Schema):
    name: str = _ca_name()
    subject: str = Field(
        min_length=1, max_length=1024, description="RFC 4514, e.g. CN=Issuing CA,O=Example"
    )
    parent: str | None = Field(
        default=None, description="Empty or null: a self-signed root; else the parent CA's name."
    )
    key_type: KeyTypeName = "rsa3072"
    days: int | None = Field(
        default=None,
        ge=1,
        le=CA_DAYS_MAX,
        description="Default 3650 for a root, 1825 for an intermediate (never past its parent).",
    )
    path_length: int | None = Field(default=None, ge=0, le=10)


class CADisableIn(Schema):
    reason: str = Field(default="", max_length=1000)


class CARevocationRequestIn(Schema):
    reason: ReasonName = Field(description="Any final reason; a CA is never put on hold.")
    invalidity_date: Instant | None = Field(
        default=None, description="With keyCompromise or cACompromise only; not in the future."
    )
    comment: str = Field(
        default="",
        max_length=1000,
        description="why, for the approver (required: blank is refused)",
    )


class CARevocationPendingOut(CARevocationRequestOut):
    cas_below: list[str] = Field(description="What approving would revoke along, as of now.")
    certificates_below: int
    problem: str = Field(description="Why it cannot be approved as it stands, or empty.")


# --- CRLs ------------------------------------------------------------------------------------


class CRLOut(Schema):
    crl_number: int
    is_delta: bool
    base_crl_number: int | None
    this_update: datetime
    next_update: datetime
    entry_count: int
    size: int
    sha256: str
    trigger: str
    published_by: str
    published_at: datetime


class CRLStatusOut(Schema):
    ca: str
    state: Literal["ok", "due", "expired", "missing"] = Field(
        description="due: past half its lifetime; expired: past nextUpdate."
    )
    signature_ok: bool | None = Field(
        description="The stored CRL parses, is signed by the CA and says what the database "
        "says; null when there is none."
    )
    problem: str
    latest: CRLOut | None
    latest_delta: CRLOut | None
    history: list[CRLOut]
    crl_url: str
    delta_crl_url: str
    pem_url: str


class CRLPublishOut(Schema):
    ca: str
    crl: CRLOut
    delta: CRLOut | None


# --- certificates ----------------------------------------------------------------------------


class CertificateOut(Schema):
    id: int
    ca: str
    serial: str
    subject: str
    sans: list[str]
    profile: str
    public_key: str
    not_before: datetime
    not_after: datetime
    status: Literal["valid", "revoked"]
    revocation_reason: str
    revoked_at: datetime | None
    invalidity_date: datetime | None
    source: str
    issued_by: str
    issued_at: datetime


class CertificateDetailOut(CertificateOut):
    fingerprint_sha256: str
    certificate_pem: str
    chain: list[str] = Field(description="Names of the issuing CA and its ancestors.")
    ca_of_certificate: str | None = Field(
        description="The intermediate CA whose certificate this is (its revocation needs a "
        "second person), or null."
    )
    key_usage: list[str]
    extended_key_usage: list[str]
    signature_algorithm: str
    crl_distribution_points: list[str]
    ocsp_urls: list[str]


class CertificatePageOut(Schema):
    items: list[CertificateOut]
    next_cursor: int | None = Field(description="Pass as ?after= for the next (older) page.")


class CertificateFilters(Schema):
    """The portal's certificate list filters."""

    ca: str = Field(default="", max_length=64)
    profile: str = Field(default="", max_length=32)
    status: Literal["", "valid", "revoked"] = ""
    expiring: int | None = Field(
        default=None, ge=1, le=3650, description="Valid, unexpired, notAfter within N days."
    )
    validity: Literal["", "unexpired", "expired"] = ""
    expires_after: date | None = Field(default=None, description="notAfter on or after (UTC).")
    expires_before: date | None = Field(default=None, description="notAfter before (UTC).")
    q: str = Field(default="", max_length=200, description="Subject, SAN or serial.")
    after: int | None = Field(default=None, ge=1, le=MAX_ID, description="Cursor from next_cursor.")
    limit: int = Field(default=50, ge=1, le=200)


class IssueCSRIn(Schema):
    ca: str = _ca_name()
    profile: str = Field(max_length=32)
    csr_pem: str = Field(min_length=1, max_length=PEM_MAX)
    days: int | None = Field(default=None, ge=1, le=LEAF_DAYS_MAX)
    subject: str | None = Field(
        default=None,
        max_length=1024,
        description="Replace the CSR's subject (RFC 4514; empty for none). Null: keep it.",
    )
    sans: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Replace the CSR's SANs: dns:, ip:, email:, uri: entries. Null: keep them.",
    )


class IssueGeneratedIn(Schema):
    ca: str = _ca_name()
    profile: str = Field(max_length=32)
    subject: str = Field(default="", max_length=1024)
    sans: list[str] = Field(default_factory=list, max_length=100)
    key_type: KeyTypeName = "rsa2048"
    days: int | None = Field(default=None, ge=1, le=LEAF_DAYS_MAX)
    password: str = Field(
        min_length=8,
        max_length=1024,
        description="Protects the PKCS#12 (and the PEM bundle's key); stored nowhere.",
    )
    delivery: Literal["pkcs12", "pem"] = Field(
        default="pkcs12", description="pem: also an encrypted PKCS#8 PEM bundle."
    )


class IssueGeneratedOut(Schema):
    certificate: CertificateOut
    pkcs12_base64: str = Field(description="Key, certificate and CA chain, once; never stored.")
    pem_bundle: str | None = Field(
        description="With delivery=pem: encrypted key, certificate and chain as PEM."
    )


class RevokeIn(Schema):
    reason: ReasonName = "unspecified"
    invalidity_date: Instant | None = Field(
        default=None, description="With keyCompromise or cACompromise only; not in the future."
    )


class ValidateIn(Schema):
    certificate_pem: str = Field(min_length=1, max_length=PEM_MAX)
    chain_pem: str = Field(default="", max_length=CHAIN_MAX)
    purpose: Literal["server", "client", "any"] = "server"
    hostname: str = Field(default="", max_length=253)


class CheckOut(Schema):
    name: str
    passed: bool | None = Field(description="null: did not apply or was skipped.")
    detail: str


class PathEntryOut(Schema):
    subject: str
    ca: str | None


class ValidateOut(Schema):
    ok: bool
    checks: list[CheckOut]
    path: list[PathEntryOut]
    paths_tried: list[str]
    purpose: str
    hostname: str | None
    subject: str | None
    serial: str | None
    issued_here: int | None = Field(description="The certificate's id if a CA here issued it.")


# --- previews (what the portal's confirmation pages show) ------------------------------------


class CertificateSummaryOut(Schema):
    """The certificate that would be signed, decoded (bar serial and the second of notBefore)."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    public_key: str
    signature_algorithm: str
    subject_alternative_names: list[str]
    key_usage: list[str]
    extended_key_usage: list[str]
    is_ca: bool
    path_length: int | None
    crl_distribution_points: list[str]
    ca_issuers_urls: list[str]
    ocsp_urls: list[str]


class CAPreviewOut(Schema):
    name: str
    subject: str
    parent: str | None
    key_type: str
    days: int
    path_length: int | None
    certificate: CertificateSummaryOut


class IssuePreviewOut(Schema):
    ca: str
    profile: str
    subject: str
    sans: list[str]
    days: int | None
    certificate: CertificateSummaryOut


class RevocationPreviewOut(Schema):
    certificate_id: int
    serial: str
    reason: str
    invalidity_date: datetime | None
    revoked_ca: str | None = Field(
        description="The intermediate CA whose certificate this is (two-person rule), or null."
    )
    cas_below: list[str]
    certificates_below: int
    current_crl_number: int | None
