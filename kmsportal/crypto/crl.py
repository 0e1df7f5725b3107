"""Certificate revocation lists (RFC 5280 §5): build, sign, load, inspect.

Pure functions over `cryptography` objects; signing goes through a
:class:`~kmsportal.crypto.signer.Signer`, so no private key is handled here.

Performance invariants (see PERF_FACTS): a CRL may hold 100k entries.

* Entries are built in one tight loop into one list, and that list is handed to the
  ``CertificateRevocationListBuilder`` constructor. ``add_revoked_certificate`` copies the
  builder's list on every call, so calling it in a loop is quadratic (~16 s at 100k).
* Revoked certificates are built with the ``RevokedCertificateBuilder`` constructor rather than
  its fluent setters (about half the cost); because that bypasses cryptography's own checks, this
  module validates serial numbers and dates itself.
* Reading a parsed CRL: :func:`revoked_serials` builds a dict once; never call
  ``get_revoked_certificate_by_serial_number`` in a loop (a linear scan per call).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from kmsportal.crypto.signer import Signer
from kmsportal.crypto.timeutil import as_utc

__all__ = [
    "MAX_CRL_NUMBER",
    "CRLEntry",
    "CRLError",
    "CRLSummary",
    "CRLValidation",
    "EntryCache",
    "RevocationReason",
    "RevokedInfo",
    "build_crl",
    "crl_is_fresh",
    "crl_revocation_status",
    "crl_summary",
    "crl_to_der",
    "crl_to_pem",
    "load_crl",
    "revoked_serials",
    "validate_crl",
    "verify_crl_signature",
]

#: CRL numbers and serial numbers are INTEGERs of at most 20 octets (RFC 5280 §5.2.3,
#: §4.1.2.2); DER integers are signed, so a non-negative one is below 2**159.
MAX_CRL_NUMBER = 2**159 - 1
_MAX_SERIAL = 2**159 - 1

#: UTCTime cannot express dates before 1950 (RFC 5280 §4.1.2.5.1), and cryptography's Rust
#: encoder panics (a BaseException) on them when the builders' checks are bypassed.
_EARLIEST = datetime(1950, 1, 1, tzinfo=UTC)


class CRLError(Exception):
    """A CRL cannot be built, parsed or interpreted; the message says why."""


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

_REASON_BY_FLAG: dict[x509.ReasonFlags, RevocationReason] = {
    reason.flag: reason for reason in RevocationReason
}


#: An entry as a plain tuple: (serial, revocation_date, reason, invalidity_date).
_EntryTuple = tuple[int, datetime, object, datetime | None]


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


# -- building ------------------------------------------------------------------------------


def _reason_extensions(*, delta: bool) -> dict[object, list[x509.Extension[x509.ExtensionType]]]:
    """Per-reason entry extension lists, shared by every entry with that reason.

    Keys are the RFC strings; ``RevocationReason`` members hash and compare equal to them, so
    one lookup serves both. ``None`` is accepted as "unspecified" for rows without a reason.
    """
    table: dict[object, list[x509.Extension[x509.ExtensionType]]] = {}
    for reason in RevocationReason:
        if reason is RevocationReason.AA_COMPROMISE:
            continue  # only meaningful for attribute certificates, which we never issue
        if reason is RevocationReason.REMOVE_FROM_CRL and not delta:
            continue  # RFC 5280 §5.3.1: removeFromCRL only appears in delta CRLs
        if reason is RevocationReason.UNSPECIFIED:
            # RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of
            # using the unspecified (0) reasonCode value".
            table[reason.value] = []
        else:
            # reasonCode is always non-critical (RFC 5280 §5.3.1).
            table[reason.value] = [
                x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(reason.flag))
            ]
    table[None] = table[RevocationReason.UNSPECIFIED.value]
    return table


_FULL_CRL_REASONS = _reason_extensions(delta=False)
_DELTA_CRL_REASONS = _reason_extensions(delta=True)


def _encodable_time(value: datetime, what: str) -> datetime:
    """An aware UTC datetime (naive input taken as UTC) that X.509 can encode (1950 or later)."""
    value = as_utc(value, what=what, error=CRLError)
    if value < _EARLIEST:
        raise CRLError(f"{what} {value.isoformat()} is before 1950, which X.509 cannot encode")
    return value


def _check_crl_number(value: object, what: str) -> int:
    if type(value) is not int:  # bool is an int subclass; a CRL number of True is a bug
        raise CRLError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_CRL_NUMBER:
        raise CRLError(
            f"{what} {value} is out of range: it must be between 0 and 2**159 - 1 "
            "(a non-negative INTEGER of at most 20 octets, RFC 5280 §5.2.3)"
        )
    return value


def _revoked_certificates(
    entries: Iterable[CRLEntry] | Iterable[_EntryTuple],
    *,
    delta: bool,
    cache: EntryCache | None = None,
) -> list[x509.RevokedCertificate]:
    """Build every entry into one list, validating what the bypassed builder setters would.

    With ``cache``, an entry equal to one of the previous build's (same serial, date, reason
    and invalidity date) reuses its already built, immutable object; the cache then holds
    exactly this build's entries (so it never grows beyond one CRL's)."""
    if cache is not None and not delta:
        return _cached_revoked_certificates(entries, cache)
    reasons = _DELTA_CRL_REASONS if delta else _FULL_CRL_REASONS
    new_entry = x509.RevokedCertificateBuilder  # constructor path: see the module docstring
    invalidity_oid = CRLEntryExtensionOID.INVALIDITY_DATE
    extension = x509.Extension
    invalidity = x509.InvalidityDate
    revoked: list[x509.RevokedCertificate] = []
    append = revoked.append
    serial: Any = None
    reason: object
    try:
        for entry in entries:
            if type(entry) is CRLEntry:
                serial = entry.serial_number
                revoked_at = entry.revocation_date
                reason = entry.reason
                invalid_since = entry.invalidity_date
            else:
                # A caller's tuple; wrong shapes and types end in the TypeError handler below.
                serial, revoked_at, reason, invalid_since = cast(_EntryTuple, entry)
            # RFC 5280 §4.1.2.2: positive, at most 20 octets. (TypeError for non-ints.)
            if not 0 < serial <= _MAX_SERIAL:
                raise CRLError("the serial number must be positive and at most 20 octets")
            if revoked_at.year <= 1950:  # cheap pre-check; the exact one is in _encodable_time
                _encodable_time(revoked_at, "the revocation date")  # raises before 1950-01-01 UTC
            reason_extensions = reasons.get(reason)
            if reason_extensions is None:
                raise CRLError(_reason_problem(reason, delta=delta))
            if invalid_since is not None:
                # invalidityDate is non-critical, a GeneralizedTime (RFC 5280 §5.3.2).
                reason_extensions = [
                    *reason_extensions,
                    extension(invalidity_oid, False, invalidity(invalid_since)),
                ]
            append(new_entry(serial, revoked_at, reason_extensions).build())
    except CRLError as exc:
        # Entries before the bad one were all appended, so its position is len(revoked).
        raise CRLError(f"CRL entry #{len(revoked)} (serial {serial!r}): {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CRLError(
            f"CRL entry #{len(revoked)} (serial {serial!r}) is not a valid "
            f"(serial, revocation_date, reason, invalidity_date): {exc}"
        ) from exc
    # RFC 5280 §5.1.2.6 lists each revoked certificate once; a duplicate would mean two
    # contradictory records (revocation date, reason) for the same certificate.
    if len({rc.serial_number for rc in revoked}) != len(revoked):
        raise CRLError("the same serial number is listed more than once")
    return revoked


class EntryCache:
    """The built entries of a CA's previous complete CRL, for :func:`build_crl`: an entry
    equal to one of them (serial, revocation date, reason, invalidity date) is not built
    again. Not thread-safe: the caller serialises builds of one CA (the CA row lock)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], x509.RevokedCertificate] = {}


def _cached_revoked_certificates(
    entries: Iterable[CRLEntry] | Iterable[_EntryTuple],
    cache: EntryCache,
) -> list[x509.RevokedCertificate]:
    get = cache.entries.get
    keys: list[tuple[object, ...]] = []
    revoked: list[x509.RevokedCertificate | None] = []
    missing_positions: list[int] = []
    missing_keys: list[tuple[object, ...]] = []
    for entry in entries:
        key = (
            (entry.serial_number, entry.revocation_date, entry.reason, entry.invalidity_date)
            if entry.__class__ is CRLEntry
            else tuple(entry)  # type: ignore[arg-type]
        )
        keys.append(key)
        built = get(key)
        if built is None:
            missing_positions.append(len(revoked))
            missing_keys.append(key)
        revoked.append(built)
    if missing_keys:
        # Built (and validated) exactly as without a cache.
        fresh = _revoked_certificates(missing_keys, delta=False)  # type: ignore[arg-type]
        for position, built in zip(missing_positions, fresh, strict=True):
            revoked[position] = built
    if len({key[0] for key in keys}) != len(keys):
        raise CRLError("the same serial number is listed more than once")
    cache.entries = dict(zip(keys, revoked, strict=True))  # type: ignore[arg-type]
    return revoked  # type: ignore[return-value]


def _reason_problem(reason: object, *, delta: bool) -> str:
    if reason == RevocationReason.REMOVE_FROM_CRL and not delta:
        return "removeFromCRL may only appear in a delta CRL (RFC 5280 §5.3.1)"
    if reason == RevocationReason.AA_COMPROMISE:
        return "aACompromise applies to attribute certificates, which this CA does not issue"
    return f"unknown revocation reason {reason!r}"


def _authority_key_identifier(issuer_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI from the issuer's SKI so it matches what certificates carry (RFC 5280 §5.2.1)."""
    try:
        ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        # Method 1 of RFC 5280 §4.2.1.2 (SHA-1 of the subjectPublicKey BIT STRING).
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_certificate.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def build_crl(
    *,
    issuer_certificate: x509.Certificate,
    signer: Signer,
    entries: Iterable[CRLEntry] | Iterable[_EntryTuple],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
    delta_crl_indicator: int | None = None,
    freshest_crl_url: str | None = None,
    entry_cache: EntryCache | None = None,
) -> x509.CertificateRevocationList:
    """Build and sign a v2 CRL for the CA ``issuer_certificate``.

    ``entries`` are :class:`CRLEntry` objects or plain tuples
    ``(serial, revocation_date, reason, invalidity_date_or_None)`` where ``reason`` is a
    :class:`RevocationReason` or its RFC string (``None`` means unspecified), as the database
    returns them; the entries are built in one pass into one list.

    ``delta_crl_indicator`` (the base CRL's number) makes this a delta CRL (RFC 5280 §5.2.4);
    ``freshest_crl_url`` adds a FreshestCRL pointer to where delta CRLs are published
    (§5.2.6). ``entry_cache`` (complete CRLs only) reuses the entries built for the CA's
    previous complete CRL: a CA with 100,000 revoked certificates rebuilds its CRL without
    building 100,000 entry objects again. Naive datetimes are taken as UTC.

    Raises :class:`CRLError` for invalid input: times out of order, a CRL number out of range,
    a signer that does not hold the issuer's key, or a bad entry (the message names it).
    """
    this_update = _encodable_time(this_update, "this_update")
    next_update = _encodable_time(next_update, "next_update")
    if next_update <= this_update:
        raise CRLError(
            f"next_update ({next_update.isoformat()}) must be after "
            f"this_update ({this_update.isoformat()})"
        )
    crl_number = _check_crl_number(crl_number, "crl_number")
    if signer.public_key != issuer_certificate.public_key():
        raise CRLError("the signer's key is not the key of the issuer certificate")

    extensions: list[x509.Extension[x509.ExtensionType]] = [
        # Both MUST be present in conforming CRLs and are non-critical (RFC 5280 §5.2.1, §5.2.3).
        x509.Extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            False,
            _authority_key_identifier(issuer_certificate),
        ),
        x509.Extension(ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(crl_number)),
    ]
    if delta_crl_indicator is not None:
        base = _check_crl_number(delta_crl_indicator, "delta_crl_indicator")
        # CRL numbers are shared by complete and delta CRLs of one scope and increase
        # monotonically (RFC 5280 §5.2.3), so a delta is always newer than its base.
        if base >= crl_number:
            raise CRLError(
                f"a delta CRL's number ({crl_number}) must be greater than its base CRL "
                f"number ({base})"
            )
        # The delta CRL indicator MUST be critical (RFC 5280 §5.2.4).
        extensions.append(
            x509.Extension(ExtensionOID.DELTA_CRL_INDICATOR, True, x509.DeltaCRLIndicator(base))
        )
    if freshest_crl_url is not None:
        if not freshest_crl_url:
            raise CRLError("freshest_crl_url must not be empty")
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(freshest_crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        # FreshestCRL MUST be non-critical (RFC 5280 §5.2.6).
        extensions.append(
            x509.Extension(ExtensionOID.FRESHEST_CRL, False, x509.FreshestCRL([point]))
        )

    revoked = _revoked_certificates(
        entries, delta=delta_crl_indicator is not None, cache=entry_cache
    )
    # The constructor, not add_revoked_certificate(): see the module docstring. The constructor
    # skips the setters' checks, which is why the values were validated above.
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_certificate.subject,  # RFC 5280 §5.1.2.3: the CA's subject name
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=revoked,
    )
    return signer.sign_crl(builder)


# -- encoding and loading ------------------------------------------------------------------


def crl_to_der(crl: x509.CertificateRevocationList) -> bytes:
    """DER bytes, as served at ``/pki/crl/<ca>.crl`` (``application/pkix-crl``)."""
    return crl.public_bytes(serialization.Encoding.DER)


def crl_to_pem(crl: x509.CertificateRevocationList) -> bytes:
    """PEM bytes (``-----BEGIN X509 CRL-----``)."""
    return crl.public_bytes(serialization.Encoding.PEM)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Parse a CRL from PEM or DER bytes; :class:`CRLError` if it is not one."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CRLError(f"a CRL must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data.strip():
        raise CRLError("the CRL is empty")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CRLError(f"not a valid X.509 CRL in PEM or DER: {exc}") from None


# -- inspecting ----------------------------------------------------------------------------


def _extension_value(crl: x509.CertificateRevocationList, cls: type[x509.ExtensionType]) -> object:
    try:
        return crl.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def crl_summary(crl: x509.CertificateRevocationList) -> CRLSummary:
    """Summarise a CRL; extension parse failures become :class:`CRLError`."""
    try:
        number = _extension_value(crl, x509.CRLNumber)
        aki = _extension_value(crl, x509.AuthorityKeyIdentifier)
        delta = _extension_value(crl, x509.DeltaCRLIndicator)
        freshest = _extension_value(crl, x509.FreshestCRL)
    except ValueError as exc:
        raise CRLError(f"the CRL has malformed extensions: {exc}") from None
    urls: list[str] = []
    if isinstance(freshest, x509.FreshestCRL):
        for point in freshest:
            urls.extend(
                name.value
                for name in point.full_name or ()
                if isinstance(name, x509.UniformResourceIdentifier)
            )
    key_id = aki.key_identifier if isinstance(aki, x509.AuthorityKeyIdentifier) else None
    oid = crl.signature_algorithm_oid
    return CRLSummary(
        issuer=crl.issuer.rfc4514_string(),
        crl_number=number.crl_number if isinstance(number, x509.CRLNumber) else None,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        entry_count=len(crl),
        authority_key_identifier=key_id.hex() if key_id is not None else None,
        is_delta=delta is not None,
        base_crl_number=delta.crl_number if isinstance(delta, x509.DeltaCRLIndicator) else None,
        freshest_crl_urls=tuple(urls),
        signature_algorithm=getattr(oid, "_name", None) or oid.dotted_string,
    )


def verify_crl_signature(
    crl: x509.CertificateRevocationList, issuer_certificate: x509.Certificate
) -> bool:
    """True if ``issuer_certificate`` issued the CRL: same name and a valid signature.

    RFC 5280 §6.3.3 (f): the CRL issuer must match and its signature must verify with the
    issuer's public key. This does not check freshness; see :func:`crl_is_fresh`.
    """
    if crl.issuer != issuer_certificate.subject:
        return False
    try:
        return crl.is_signature_valid(issuer_certificate.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm):
        return False  # a key type that cannot sign CRLs cannot have signed this one


def crl_is_fresh(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    """True if ``this_update <= now < next_update`` (naive ``now`` is taken as UTC).

    A CRL without nextUpdate is never fresh: conforming CAs MUST include it (RFC 5280
    §5.1.2.5), and without it nobody can tell when newer information is due.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= now < next_update


def revoked_serials(crl: x509.CertificateRevocationList) -> dict[int, RevokedInfo]:
    """Map every serial number on the CRL to its :class:`RevokedInfo`, in one pass.

    Build this once per CRL and look serials up in the dict (O(1)); the CRL object's own
    ``get_revoked_certificate_by_serial_number`` scans the whole list on every call.
    A missing reasonCode means unspecified (RFC 5280 §5.3.1).
    """
    problems: list[str] = []
    result = _entry_map(crl, problems, strict=False)
    if result is None:
        raise CRLError(problems[0])
    return result


# -- validating a CRL as a relying party (RFC 5280 §6.3.3) ------------------------------------

#: CRL extensions this code processes (RFC 5280 §5.2); any other critical one is refused.
_KNOWN_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.DELTA_CRL_INDICATOR,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
#: CRL entry extensions processed (RFC 5280 §5.3); certificateIssuer (indirect CRLs) is not.
_KNOWN_ENTRY_EXTENSIONS = frozenset(
    {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
        x509.ObjectIdentifier("2.5.29.23"),  # holdInstructionCode
    }
)
_WEAK_HASHES = ("md5", "sha1")


@dataclass(frozen=True)
class CRLValidation:
    """The outcome of :func:`validate_crl`: ``problems`` is empty when the CRL can be relied
    on for the asked scope. ``entries`` maps revoked serials (parsed once) when it could be
    read; ``summary`` is None when not even that could be read."""

    problems: tuple[str, ...]
    summary: CRLSummary | None
    entries: dict[int, RevokedInfo] | None
    crl: x509.CertificateRevocationList | None

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _crl_extensions(
    crl: x509.CertificateRevocationList, problems: list[str]
) -> x509.Extensions | None:
    try:
        return crl.extensions
    except Exception as exc:  # duplicate or malformed extensions
        problems.append(f"the CRL's extensions cannot be read: {_short(exc)}")
        return None


def _get(extensions: x509.Extensions | None, oid: x509.ObjectIdentifier) -> x509.Extension | None:  # type: ignore[type-arg]
    if extensions is None:
        return None
    try:
        return extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _issuer_problems(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, problems: list[str]
) -> None:
    try:
        if crl.issuer != issuer.subject:
            problems.append(
                f"the CRL's issuer ({crl.issuer.rfc4514_string()}) is not the CA "
                f"({issuer.subject.rfc4514_string()})"
            )
            return
    except Exception as exc:
        problems.append(f"the CRL's issuer name cannot be read: {_short(exc)}")
        return
    # §6.3.3 (f): a keyUsage in the CRL issuer's certificate must allow cRLSign.
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except Exception as exc:
        problems.append(f"the CA certificate's extensions cannot be read: {_short(exc)}")
        return
    if usage is not None and not usage.crl_sign:
        problems.append(
            "the CA certificate's key usage lacks cRLSign, so its key may not sign CRLs "
            "(RFC 5280 §6.3.3 (f))"
        )
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except Exception:
        valid = False
    if not valid:
        problems.append("the CRL's signature does not verify with the CA's key")
    try:
        algorithm = crl.signature_hash_algorithm
        if algorithm is not None and algorithm.name in _WEAK_HASHES:
            problems.append(
                f"the CRL is signed with {algorithm.name}; SHA-256 or stronger is needed"
            )
    except Exception:
        problems.append("the CRL's signature algorithm is not supported")


def _scope_problems(
    idp: x509.IssuingDistributionPoint | None,
    certificate: x509.Certificate | None,
    problems: list[str],
) -> None:
    """§6.3.3 (b)(2): the CRL's scope (IssuingDistributionPoint) covers the certificate."""
    if idp is None:
        return
    if idp.indirect_crl:
        problems.append("the CRL is an indirect CRL, which is not supported")
    if idp.only_contains_attribute_certs:
        problems.append("the CRL only covers attribute certificates")
    if idp.only_some_reasons is not None:
        problems.append(
            "the CRL covers only some revocation reasons; a complete answer needs other CRLs"
        )
    if certificate is None:
        return
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except Exception as exc:
        problems.append(f"the certificate's extensions cannot be read: {_short(exc)}")
        return
    if idp.only_contains_user_certs and is_ca:
        problems.append("the CRL only covers end-entity certificates, and this one is a CA")
    if idp.only_contains_ca_certs and not is_ca:
        problems.append("the CRL only covers CA certificates, and this one is an end entity")
    if idp.full_name:
        try:
            points: Iterable[x509.DistributionPoint] = (
                certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
            )
        except x509.ExtensionNotFound:
            points = ()
        names = {n for p in points for n in (p.full_name or [])}
        if not names.intersection(idp.full_name):
            problems.append(
                "the CRL's issuing distribution point is not one of the certificate's CRL "
                "distribution points, so it does not cover this certificate"
            )


def _entry_map(
    crl: x509.CertificateRevocationList, problems: list[str], *, strict: bool = True
) -> dict[int, RevokedInfo] | None:
    """Every entry as serial -> RevokedInfo, in one pass; None (and the reason appended to
    ``problems``) if an entry is malformed or, when ``strict``, has an unknown critical or a
    certificateIssuer extension (§5.3: such a CRL cannot be relied on)."""
    reason_oid = CRLEntryExtensionOID.CRL_REASON
    invalidity_oid = CRLEntryExtensionOID.INVALIDITY_DATE
    known = _KNOWN_ENTRY_EXTENSIONS
    unspecified = RevocationReason.UNSPECIFIED
    result: dict[int, RevokedInfo] = {}
    try:
        for revoked in crl:
            reason = unspecified
            invalid_since: datetime | None = None
            for ext in revoked.extensions:
                oid = ext.oid
                if oid == reason_oid:
                    reason = _REASON_BY_FLAG[ext.value.reason]
                elif oid == invalidity_oid:
                    invalid_since = ext.value.invalidity_date_utc
                elif not strict:
                    continue
                elif oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER:
                    problems.append("the CRL has certificateIssuer entries (an indirect CRL)")
                    return None
                elif ext.critical and oid not in known:
                    problems.append(
                        f"the CRL entry for serial {revoked.serial_number:X} has the unknown "
                        f"critical extension {oid.dotted_string}"
                    )
                    return None
            result[revoked.serial_number] = RevokedInfo(
                revocation_date=revoked.revocation_date_utc,
                reason=reason,
                invalidity_date=invalid_since,
            )
    except Exception as exc:
        problems.append(f"the CRL has a malformed entry: {_short(exc)}")
        return None
    return result


def validate_crl(
    crl: x509.CertificateRevocationList | bytes,
    *,
    issuer_certificate: x509.Certificate,
    now: datetime,
    certificate: x509.Certificate | None = None,
    base: CRLValidation | None = None,
    read_entries: bool = True,
    expect_delta: bool = False,
) -> CRLValidation:
    """Check a CRL as RFC 5280 §6.3.3 asks before relying on it; never raises.

    Issuer name and signature (with the CA's key, whose keyUsage must allow cRLSign), AKI,
    CRLNumber present and non-critical, no unknown critical CRL or entry extension, the
    scope (IssuingDistributionPoint) covering ``certificate`` when given, freshness
    (thisUpdate <= now < nextUpdate). A complete CRL is expected unless ``base`` (a valid
    complete CRL) is given: then this must be a delta CRL for it (§5.2.4, §6.3.3 (c)).
    ``expect_delta`` asks for a delta CRL without its base at hand (the caller combines it
    with a complete CRL it checked itself).
    """
    problems: list[str] = []
    parsed: x509.CertificateRevocationList | None
    if isinstance(crl, x509.CertificateRevocationList):
        parsed = crl
    else:
        try:
            parsed = load_crl(crl)
        except CRLError as exc:
            return CRLValidation((str(exc),), None, None, None)
        except Exception as exc:
            return CRLValidation((f"not a CRL: {_short(exc)}",), None, None, None)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    try:
        _issuer_problems(parsed, issuer_certificate, problems)
        extensions = _crl_extensions(parsed, problems)
        summary = None
        if extensions is not None:
            for extension in extensions:
                if extension.critical and extension.oid not in _KNOWN_CRL_EXTENSIONS:
                    problems.append(
                        f"the CRL has the unknown critical extension {extension.oid.dotted_string}"
                    )
            number = _get(extensions, ExtensionOID.CRL_NUMBER)
            if number is None:
                problems.append("the CRL has no CRLNumber, which RFC 5280 §5.2.3 requires")
            elif number.critical:
                problems.append("the CRL's CRLNumber is critical; RFC 5280 §5.2.3 forbids it")
            aki = _get(extensions, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
            try:
                ski = issuer_certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value.digest
            except Exception:
                ski = None
            if aki is not None and ski is not None and aki.value.key_identifier not in (None, ski):
                problems.append("the CRL's authority key identifier is not the CA's key")
            delta = _get(extensions, ExtensionOID.DELTA_CRL_INDICATOR)
            idp_extension = _get(extensions, ExtensionOID.ISSUING_DISTRIBUTION_POINT)
            idp = idp_extension.value if idp_extension is not None else None
            _scope_problems(idp, certificate, problems)
            summary = crl_summary(parsed)
            if base is None and not expect_delta and delta is not None:
                problems.append("this is a delta CRL where a complete CRL was expected")
            if expect_delta and delta is None:
                problems.append("a delta CRL was expected, but this CRL has no DeltaCRLIndicator")
            if base is not None:
                _delta_problems(summary, delta, idp, base, problems)
        this_update = parsed.last_update_utc
        next_update = parsed.next_update_utc
        if this_update > now:
            problems.append(
                f"the CRL's this update ({this_update:%Y-%m-%d %H:%M:%S} UTC) is in the future"
            )
        if next_update is None:
            problems.append("the CRL has no next update, so it is never current")
        elif now >= next_update:
            problems.append(
                f"the CRL is not current: next update was {next_update:%Y-%m-%d %H:%M:%S} UTC"
            )
        entries = _entry_map(parsed, problems) if read_entries else None
    except Exception as exc:  # anything unforeseen in a hostile CRL
        problems.append(f"the CRL cannot be interpreted: {_short(exc)}")
        return CRLValidation(tuple(problems), None, None, parsed)
    return CRLValidation(tuple(dict.fromkeys(problems)), summary, entries, parsed)


def _delta_problems(
    summary: CRLSummary,
    delta: x509.Extension | None,  # type: ignore[type-arg]
    idp: x509.IssuingDistributionPoint | None,
    base: CRLValidation,
    problems: list[str],
) -> None:
    if delta is None:
        problems.append("a delta CRL was expected, but this CRL has no DeltaCRLIndicator")
        return
    if not delta.critical:
        problems.append("the delta CRL indicator is not critical (RFC 5280 §5.2.4)")
    if base.summary is None or base.crl is None or base.summary.crl_number is None:
        problems.append("there is no usable complete CRL for this delta CRL")
        return
    if base.summary.issuer != summary.issuer:
        problems.append("the delta CRL and the complete CRL have different issuers")
    if summary.base_crl_number is not None and summary.base_crl_number > base.summary.crl_number:
        problems.append(
            f"the delta CRL needs complete CRL #{summary.base_crl_number} or newer; the "
            f"complete CRL is #{base.summary.crl_number}"
        )
    if summary.crl_number is not None and summary.crl_number <= base.summary.crl_number:
        problems.append("the delta CRL is older than the complete CRL")
    try:
        base_idp = base.crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except Exception:
        base_idp = None
    if base_idp != idp:
        problems.append("the delta CRL's scope differs from the complete CRL's")


def crl_revocation_status(
    serial_number: int, complete: CRLValidation, delta: CRLValidation | None = None
) -> RevokedInfo | None:
    """What a valid complete CRL, updated by an optional valid delta CRL, says about
    ``serial_number``: its RevokedInfo, or None if it is not revoked. A removeFromCRL entry
    in the delta releases a hold listed in the complete CRL (RFC 5280 §5.3.1)."""
    if delta is not None and delta.entries is not None and serial_number in delta.entries:
        info = delta.entries[serial_number]
        return None if info.reason == RevocationReason.REMOVE_FROM_CRL else info
    return (complete.entries or {}).get(serial_number)
