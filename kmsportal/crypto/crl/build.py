"""Building and signing CRLs (full and delta), with the entry cache for repeated builds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from kmsportal.crypto.crl.entries import (
    EARLIEST,
    MAX_CRL_NUMBER,
    MAX_SERIAL,
    CRLEntry,
    CRLError,
    EntryTuple,
    RevocationReason,
)
from kmsportal.crypto.signer import Signer
from kmsportal.crypto.timeutil import as_utc

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
    if value < EARLIEST:
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
    entries: Iterable[CRLEntry] | Iterable[EntryTuple],
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
                serial, revoked_at, reason, invalid_since = cast(EntryTuple, entry)
            # RFC 5280 §4.1.2.2: positive, at most 20 octets. (TypeError for non-ints.)
            if not 0 < serial <= MAX_SERIAL:
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
    entries: Iterable[CRLEntry] | Iterable[EntryTuple],
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
    entries: Iterable[CRLEntry] | Iterable[EntryTuple],
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
