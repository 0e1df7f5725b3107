"""Validating a CRL as a relying party (RFC 5280 section 6.3.3) and revocation status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from kmsportal.crypto.crl.entries import (
    CRLError,
    CRLSummary,
    RevocationReason,
    RevokedInfo,
)
from kmsportal.crypto.crl.read import crl_summary, entry_map, exception_text, load_crl

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


def _crl_extensions(
    crl: x509.CertificateRevocationList, problems: list[str]
) -> x509.Extensions | None:
    try:
        return crl.extensions
    except Exception as exc:  # duplicate or malformed extensions
        problems.append(f"the CRL's extensions cannot be read: {exception_text(exc)}")
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
        problems.append(f"the CRL's issuer name cannot be read: {exception_text(exc)}")
        return
    # §6.3.3 (f): a keyUsage in the CRL issuer's certificate must allow cRLSign.
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except Exception as exc:
        problems.append(f"the CA certificate's extensions cannot be read: {exception_text(exc)}")
        return
    if usage is not None and not usage.crl_sign:
        problems.append(
            "the CA certificate's key usage lacks cRLSign, so its key may not sign CRLs "
            "(RFC 5280 §6.3.3 (f))"
        )
    # A weak hash is refused on its own: cryptography does not verify MD5 or SHA-1
    # signatures at all, and "does not verify" would wrongly suggest a wrong key or tampering.
    try:
        algorithm = crl.signature_hash_algorithm
    except Exception:
        problems.append("the CRL's signature algorithm is not supported")
        return
    if algorithm is not None and algorithm.name in _WEAK_HASHES:
        problems.append(f"the CRL is signed with {algorithm.name}; SHA-256 or stronger is needed")
        return
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except Exception:
        valid = False
    if not valid:
        problems.append("the CRL's signature does not verify with the CA's key")


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
        problems.append(f"the certificate's extensions cannot be read: {exception_text(exc)}")
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
            return CRLValidation((f"not a CRL: {exception_text(exc)}",), None, None, None)
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
        entries = entry_map(parsed, problems) if read_entries else None
    except Exception as exc:  # anything unforeseen in a hostile CRL
        problems.append(f"the CRL cannot be interpreted: {exception_text(exc)}")
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
