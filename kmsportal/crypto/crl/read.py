"""Loading a CRL and reading it: summary, signature, freshness, revoked serials."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import CRLEntryExtensionOID

from kmsportal.crypto.crl.entries import (
    REASON_BY_FLAG,
    CRLError,
    CRLSummary,
    RevocationReason,
    RevokedInfo,
)


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
    result = entry_map(crl, problems, strict=False)
    if result is None:
        raise CRLError(problems[0])
    return result


# -- validating a CRL as a relying party (RFC 5280 §6.3.3) ------------------------------------


#: CRL entry extensions processed (RFC 5280 §5.3); certificateIssuer (indirect CRLs) is not.
_KNOWN_ENTRY_EXTENSIONS = frozenset(
    {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
        x509.ObjectIdentifier("2.5.29.23"),  # holdInstructionCode
    }
)


def entry_map(
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
                    reason = REASON_BY_FLAG[ext.value.reason]
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
        problems.append(f"the CRL has a malformed entry: {exception_text(exc)}")
        return None
    return result


def exception_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
