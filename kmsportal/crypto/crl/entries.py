"""CRLError, the revocation reasons and the entry and summary types."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from kmsportal.crypto.errors import KMSError

#: CRL numbers and serial numbers are INTEGERs of at most 20 octets (RFC 5280 §5.2.3,
#: §4.1.2.2); DER integers are signed, so a non-negative one is below 2**159.
MAX_CRL_NUMBER = 2**159 - 1
MAX_SERIAL = 2**159 - 1

#: UTCTime cannot express dates before 1950 (RFC 5280 §4.1.2.5.1), and cryptography's Rust
#: encoder panics (a BaseException) on them when the builders' checks are bypassed.
EARLIEST = datetime(1950, 1, 1, tzinfo=UTC)


class CRLError(KMSError):
    """A CRL cannot be built, parsed or interpreted; the message says why."""

    code = "crl_unusable"
    status = 400


class RevocationReason(enum.StrEnum):
    """CRLReason (RFC 5280 §5.3.1); the values are the RFC's ASN.1 names.

    Being a ``StrEnum``, a member equals its value, so the database can store the plain
    string (``"keyCompromise"``) and both forms work wherever a reason is accepted.
    """

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    #: Only in delta CRLs: the certificate was on hold and is released (RFC 5280 §5.3.1).
    REMOVE_FROM_CRL = "removeFromCRL"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    #: For attribute certificates; accepted when reading CRLs, never issued here.
    AA_COMPROMISE = "aACompromise"

    @property
    def label(self) -> str:
        """A human-readable name, e.g. "Key compromise"."""
        return _LABELS[self]

    @property
    def code(self) -> int:
        """The CRLReason ENUMERATED value (RFC 5280 §5.3.1; 7 is unused)."""
        return _CODES[self]

    @property
    def flag(self) -> x509.ReasonFlags:
        """The equivalent `cryptography` enum member."""
        return x509.ReasonFlags(self.value)

    @property
    def is_issuable(self) -> bool:
        """True for reasons an operator may choose when revoking a certificate."""
        return self not in (RevocationReason.REMOVE_FROM_CRL, RevocationReason.AA_COMPROMISE)

    @classmethod
    def from_flag(cls, flag: x509.ReasonFlags) -> RevocationReason:
        """Map a `cryptography` ``ReasonFlags`` member to this enum."""
        return cls(flag.value)


_LABELS: dict[RevocationReason, str] = {
    RevocationReason.UNSPECIFIED: "Unspecified",
    RevocationReason.KEY_COMPROMISE: "Key compromise",
    RevocationReason.CA_COMPROMISE: "CA compromise",
    RevocationReason.AFFILIATION_CHANGED: "Affiliation changed",
    RevocationReason.SUPERSEDED: "Superseded",
    RevocationReason.CESSATION_OF_OPERATION: "Cessation of operation",
    RevocationReason.CERTIFICATE_HOLD: "Certificate hold",
    RevocationReason.REMOVE_FROM_CRL: "Remove from CRL",
    RevocationReason.PRIVILEGE_WITHDRAWN: "Privilege withdrawn",
    RevocationReason.AA_COMPROMISE: "AA compromise",
}

_CODES: dict[RevocationReason, int] = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.REMOVE_FROM_CRL: 8,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
    RevocationReason.AA_COMPROMISE: 10,
}

REASON_BY_FLAG: dict[x509.ReasonFlags, RevocationReason] = {
    reason.flag: reason for reason in RevocationReason
}


#: An entry as a plain tuple: (serial, revocation_date, reason, invalidity_date).
EntryTuple = tuple[int, datetime, object, datetime | None]


@dataclass(frozen=True, slots=True)
class CRLEntry:
    """One revoked certificate to list in a CRL.

    Naive datetimes are taken as UTC. ``reason`` also accepts the RFC string
    (``"keyCompromise"``), which is converted to :class:`RevocationReason`.
    """

    serial_number: int
    revocation_date: datetime
    reason: RevocationReason = RevocationReason.UNSPECIFIED
    #: When the key is known or suspected to have been compromised (RFC 5280 §5.3.2).
    invalidity_date: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reason, RevocationReason):
            try:
                reason = RevocationReason(self.reason)
            except ValueError:
                raise CRLError(f"unknown revocation reason {self.reason!r}") from None
            object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True)
class RevokedInfo:
    """What a CRL says about one revoked serial number (datetimes are aware, UTC)."""

    revocation_date: datetime
    reason: RevocationReason
    invalidity_date: datetime | None


@dataclass(frozen=True, slots=True)
class CRLSummary:
    """The facts a person or a monitor wants to see about a CRL (datetimes aware, UTC)."""

    issuer: str
    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    entry_count: int
    #: Hex of the AuthorityKeyIdentifier keyIdentifier, or None when absent.
    authority_key_identifier: str | None
    is_delta: bool
    #: The DeltaCRLIndicator's base CRL number (delta CRLs only).
    base_crl_number: int | None
    #: FreshestCRL URIs (where to fetch delta CRLs), empty when absent.
    freshest_crl_urls: tuple[str, ...]
    #: Name of the signature algorithm, e.g. "sha256WithRSAEncryption".
    signature_algorithm: str
