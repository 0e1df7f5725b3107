"""OCSP responder primitives (RFC 6960): parse a request, answer it, report errors.

Pure functions over bytes and `cryptography` objects; the Django view decides the status
(from the database) and serves the bytes. Signing goes through a
:class:`~kmsportal.crypto.signer.Signer`, as the CA itself or as a delegated responder.

Flow in the view::

    try:
        parsed = parse_ocsp_request(body)
    except OCSPMalformedRequest:
        return build_ocsp_error("malformedRequest")
    if not request_matches_issuer(parsed, ca_certificate):
        return build_ocsp_error("unauthorized")   # RFC 6960 §2.3: not our certificate
    ... look up parsed.serial_number, then build_ocsp_response(...)
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID

from kmsportal.crypto.crl import RevocationReason
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.signer import Signer
from kmsportal.crypto.timeutil import as_utc

__all__ = [
    "MAX_NONCE_LENGTH",
    "CertStatus",
    "OCSPError",
    "OCSPMalformedRequest",
    "OCSPResponseSummary",
    "ParsedOCSPRequest",
    "build_ocsp_error",
    "build_ocsp_response",
    "load_ocsp_response",
    "ocsp_response_summary",
    "parse_ocsp_request",
    "request_matches_issuer",
]

#: RFC 9654 §2.1 (which replaced RFC 8954 and RFC 6960 §4.4.1): a nonce is 1 to 128 octets and
#: a request with a longer or empty one MUST be rejected with malformedRequest.
MAX_NONCE_LENGTH = 128

#: Request extensions we understand (RFC 6960 §4.4). An unknown *critical* extension makes the
#: request one we cannot process correctly, so it is refused rather than silently ignored.
_UNDERSTOOD_REQUEST_EXTENSIONS = frozenset({OCSPExtensionOID.NONCE})

_ERROR_STATUSES: dict[str, ocsp.OCSPResponseStatus] = {
    # RFC 6960 §4.2.1 OCSPResponseStatus names.
    "malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internalError": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
    "sigRequired": ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
}
_STATUS_NAMES: dict[ocsp.OCSPResponseStatus, str] = {
    ocsp.OCSPResponseStatus.SUCCESSFUL: "successful",
    **{status: name for name, status in _ERROR_STATUSES.items()},
}


class OCSPError(KMSError):
    """An OCSP request or response cannot be built, parsed or interpreted."""

    code = "ocsp_invalid"
    status = 400


class OCSPMalformedRequest(OCSPError):
    """The request cannot be processed; answer it with ``build_ocsp_error("malformedRequest")``."""


class CertStatus(enum.StrEnum):
    """The certStatus of a SingleResponse (RFC 6960 §2.2)."""

    GOOD = "good"
    REVOKED = "revoked"
    #: The responder does not know the certificate (e.g. a serial it never issued).
    UNKNOWN = "unknown"

    @property
    def ocsp_status(self) -> ocsp.OCSPCertStatus:
        """The equivalent `cryptography` enum member."""
        return _OCSP_CERT_STATUS[self]


_OCSP_CERT_STATUS: dict[CertStatus, ocsp.OCSPCertStatus] = {
    CertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}
_CERT_STATUS_BY_OCSP = {value: key for key, value in _OCSP_CERT_STATUS.items()}


@dataclass(frozen=True, slots=True)
class ParsedOCSPRequest:
    """The one CertID of a request (RFC 6960 §4.1.1) and its nonce, if any."""

    serial_number: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    #: The hash the client used for the two issuer hashes (SHA-1 for nearly every client).
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None


@dataclass(frozen=True, slots=True)
class OCSPResponseSummary:
    """What an OCSP response says, for tests, the client and logs (datetimes aware, UTC).

    For an unsuccessful response only ``response_status`` is set.
    """

    #: RFC 6960 §4.2.1 name: "successful", "malformedRequest", "unauthorized", ...
    response_status: str
    cert_status: CertStatus | None = None
    serial_number: int | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    produced_at: datetime | None = None
    nonce: bytes | None = None
    revocation_time: datetime | None = None
    revocation_reason: RevocationReason | None = None
    #: Hex SHA-1 of the responder's public key when the ResponderID is byKey.
    responder_key_hash: str | None = None
    #: RFC 4514 name when the ResponderID is byName.
    responder_name: str | None = None
    #: Certificates embedded in the response (a delegated responder's certificate).
    certificate_count: int = 0


# -- requests ------------------------------------------------------------------------------


def parse_ocsp_request(data: bytes) -> ParsedOCSPRequest:
    """Parse a DER OCSPRequest holding exactly one CertID.

    Raises :class:`OCSPMalformedRequest` for anything the responder cannot process:
    garbage, several certificates in one request (unsupported by `cryptography`), an
    unsupported CertID hash algorithm, a nonce outside 1..128 octets (RFC 9654 §2.1) or an
    unknown critical extension.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise OCSPMalformedRequest("the OCSP request is empty")
    try:
        request = ocsp.load_der_ocsp_request(bytes(data))
        serial_number = request.serial_number
        name_hash = request.issuer_name_hash
        key_hash = request.issuer_key_hash
        algorithm = request.hash_algorithm
        extensions = request.extensions
    except UnsupportedAlgorithm as exc:
        raise OCSPMalformedRequest(f"unsupported CertID hash algorithm: {exc}") from None
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise OCSPMalformedRequest(f"not a valid single-certificate OCSP request: {exc}") from None

    nonce: bytes | None = None
    for extension in extensions:
        if extension.oid == OCSPExtensionOID.NONCE:
            nonce = extension.value.nonce
            if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
                raise OCSPMalformedRequest(
                    f"the nonce is {len(nonce)} octets; RFC 9654 allows 1 to {MAX_NONCE_LENGTH}"
                )
        elif extension.critical and extension.oid not in _UNDERSTOOD_REQUEST_EXTENSIONS:
            raise OCSPMalformedRequest(
                f"unsupported critical request extension {extension.oid.dotted_string}"
            )
    return ParsedOCSPRequest(
        serial_number=serial_number,
        issuer_name_hash=name_hash,
        issuer_key_hash=key_hash,
        hash_algorithm=algorithm,
        nonce=nonce,
    )


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(content start, content end, element end) of the DER TLV starting at ``offset``."""
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:  # long form: the low bits count the length octets (X.690 §8.1.3.5)
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return start, end, end


def _der_children(data: bytes) -> list[bytes]:
    """The raw child TLVs of the constructed DER element ``data`` (e.g. a SEQUENCE)."""
    position, end, _ = _der_element(data, 0)
    children = []
    while position < end:
        _, _, next_position = _der_element(data, position)
        children.append(data[position:next_position])
        position = next_position
    return children


@functools.lru_cache(maxsize=64)
def _issuer_fields(issuer_certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """(DER subject Name, subjectPublicKey BIT STRING value) exactly as in the certificate.

    Taken from the certificate's own bytes rather than re-encoded, so the hashes match what a
    client computed from the same certificate byte for byte.
    """
    tbs = _der_children(issuer_certificate.tbs_certificate_bytes)
    # TBSCertificate (RFC 5280 §4.1): [0] version (optional), serialNumber, signature,
    # issuer, validity, subject, subjectPublicKeyInfo, ...
    first = 1 if tbs[0][0] == 0xA0 else 0
    subject, spki = tbs[first + 4], tbs[first + 5]
    bit_string = _der_children(spki)[1]
    start, end, _ = _der_element(bit_string, 0)
    # The first content octet of a BIT STRING counts unused bits; RFC 6960 §4.1.1 hashes the
    # value "excluding the tag and length fields", i.e. what follows that octet.
    return subject, bit_string[start + 1 : end]


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    context = hashes.Hash(algorithm)
    context.update(data)
    return context.finalize()


def request_matches_issuer(parsed: ParsedOCSPRequest, issuer_certificate: x509.Certificate) -> bool:
    """True if the request's CertID names ``issuer_certificate`` as the issuer.

    RFC 6960 §4.1.1: issuerNameHash is the hash of the issuer's DER distinguished name and
    issuerKeyHash the hash of its public key BIT STRING value, both with the CertID's hash
    algorithm. A mismatch means the request is for another CA: answer ``unauthorized``.
    """
    subject, public_key = _issuer_fields(issuer_certificate)
    return (
        _digest(parsed.hash_algorithm, subject) == parsed.issuer_name_hash
        and _digest(parsed.hash_algorithm, public_key) == parsed.issuer_key_hash
    )


# -- responses -----------------------------------------------------------------------------


def _check_delegated_responder(
    responder_certificate: x509.Certificate, issuer_certificate: x509.Certificate
) -> None:
    """RFC 6960 §4.2.2.2: a delegate is issued directly by the CA and carries id-kp-OCSPSigning.

    Checked here so a misconfigured responder fails loudly instead of producing responses
    that every client rejects.
    """
    if responder_certificate.issuer != issuer_certificate.subject:
        raise OCSPError("the delegated responder certificate was not issued by this CA")
    try:
        eku = responder_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku.value:
        raise OCSPError(
            "the delegated responder certificate lacks the id-kp-OCSPSigning extended key usage"
        )
    try:
        responder_certificate.verify_directly_issued_by(issuer_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise OCSPError(
            f"the delegated responder certificate is not signed by this CA: {exc}"
        ) from None


def _revocation_fields(
    status: CertStatus,
    revocation_time: datetime | None,
    revocation_reason: RevocationReason | str | None,
) -> tuple[datetime | None, x509.ReasonFlags | None]:
    if status is not CertStatus.REVOKED:
        if revocation_time is not None or revocation_reason is not None:
            raise OCSPError(f"a {status} certificate has no revocation time or reason")
        return None, None
    if revocation_time is None:
        raise OCSPError("a revoked status needs its revocation_time (RFC 6960 §2.2)")
    if revocation_reason is None:
        return as_utc(revocation_time, what="revocation_time", error=OCSPError), None
    try:
        reason = RevocationReason(revocation_reason)
    except ValueError:
        raise OCSPError(f"unknown revocation reason {revocation_reason!r}") from None
    if not reason.is_issuable:
        # removeFromCRL means "no longer revoked" (answer good); aACompromise is for
        # attribute certificates (RFC 5280 §5.3.1).
        raise OCSPError(f"{reason} is not a reason a revoked certificate can carry")
    # Same rule as the CRL (RFC 5280 §5.3.1): say nothing rather than "unspecified".
    flag = None if reason is RevocationReason.UNSPECIFIED else reason.flag
    return as_utc(revocation_time, what="revocation_time", error=OCSPError), flag


def build_ocsp_response(
    *,
    parsed_request: ParsedOCSPRequest,
    issuer_certificate: x509.Certificate,
    responder_certificate: x509.Certificate,
    signer: Signer,
    status: CertStatus | str,
    revocation_time: datetime | None,
    revocation_reason: RevocationReason | str | None,
    this_update: datetime,
    next_update: datetime,
    subject_certificate: x509.Certificate | None,
) -> bytes:
    """Build and sign a successful BasicOCSPResponse for one certificate; returns DER.

    The SingleResponse echoes the request's CertID exactly (same hash algorithm and hashes,
    RFC 6960 §4.2.2.3 matching), which also works for serials we never issued (``unknown``).
    ``responder_certificate`` is the CA itself or a delegated responder issued by it; a
    delegate's certificate is embedded so clients can verify it (RFC 6960 §4.2.2.2). The
    ResponderID is the key hash; the request's nonce, if any, is echoed (RFC 6960 §4.4.1).

    ``subject_certificate``, when known, is only cross-checked against the request. Raises
    :class:`OCSPError` for inconsistent input (e.g. a revoked status without a time, a
    request for another CA, a signer that does not hold the responder's key).
    """
    try:
        cert_status = CertStatus(status)
    except ValueError:
        raise OCSPError(f"unknown certificate status {status!r}") from None
    if not request_matches_issuer(parsed_request, issuer_certificate):
        raise OCSPError("the request is for another issuer; answer it with 'unauthorized'")
    if subject_certificate is not None:
        if subject_certificate.serial_number != parsed_request.serial_number:
            raise OCSPError("subject_certificate is not the certificate the request asks about")
        if subject_certificate.issuer != issuer_certificate.subject:
            raise OCSPError("subject_certificate was not issued by issuer_certificate")
    this_update = as_utc(this_update, what="this_update", error=OCSPError)
    next_update = as_utc(next_update, what="next_update", error=OCSPError)
    if next_update <= this_update:
        raise OCSPError(
            f"next_update ({next_update.isoformat()}) must be after "
            f"this_update ({this_update.isoformat()})"
        )
    revoked_at, reason_flag = _revocation_fields(cert_status, revocation_time, revocation_reason)

    delegated = responder_certificate != issuer_certificate
    if delegated:
        _check_delegated_responder(responder_certificate, issuer_certificate)
    if signer.public_key != responder_certificate.public_key():
        raise OCSPError("the signer's key is not the key of the responder certificate")

    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=parsed_request.issuer_name_hash,
        issuer_key_hash=parsed_request.issuer_key_hash,
        serial_number=parsed_request.serial_number,
        algorithm=parsed_request.hash_algorithm,
        cert_status=cert_status.ocsp_status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=revoked_at,
        revocation_reason=reason_flag,
    )
    if delegated:
        builder = builder.certificates([responder_certificate])
    if parsed_request.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(parsed_request.nonce), critical=False)
    # The signer sets the ResponderID (byKey, RFC 6960 §4.2.2.3) and signs.
    response = signer.sign_ocsp_response(builder, responder_certificate)
    return response.public_bytes(serialization.Encoding.DER)


@functools.cache
def _error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


def build_ocsp_error(status: str) -> bytes:
    """An unsigned, unsuccessful OCSPResponse (RFC 6960 §4.2.1) as DER.

    ``status`` is the RFC name: "malformedRequest", "internalError", "tryLater",
    "sigRequired" or "unauthorized". These responses carry no responseBytes and no signature.
    """
    try:
        response_status = _ERROR_STATUSES[status]
    except (KeyError, TypeError):
        raise OCSPError(
            f"{status!r} is not an OCSP error status; use one of {', '.join(_ERROR_STATUSES)}"
        ) from None
    return _error_response(response_status)


def load_ocsp_response(data: bytes) -> ocsp.OCSPResponse:
    """Parse a DER OCSPResponse; :class:`OCSPError` if it is not one."""
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise OCSPError("the OCSP response is empty")
    try:
        return ocsp.load_der_ocsp_response(bytes(data))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OCSPError(f"not a valid DER OCSP response: {exc}") from None


def ocsp_response_summary(response: ocsp.OCSPResponse) -> OCSPResponseSummary:
    """Summarise a (single-certificate) OCSP response."""
    status_name = _STATUS_NAMES[response.response_status]
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OCSPResponseSummary(response_status=status_name)
    try:
        nonce: bytes | None = None
        for extension in response.extensions:
            if extension.oid == OCSPExtensionOID.NONCE:
                nonce = extension.value.nonce
        reason = response.revocation_reason
        key_hash = response.responder_key_hash
        name = response.responder_name
        return OCSPResponseSummary(
            response_status=status_name,
            cert_status=_CERT_STATUS_BY_OCSP[response.certificate_status],
            serial_number=response.serial_number,
            this_update=response.this_update_utc,
            next_update=response.next_update_utc,
            produced_at=response.produced_at_utc,
            nonce=nonce,
            revocation_time=response.revocation_time_utc,
            revocation_reason=RevocationReason.from_flag(reason) if reason is not None else None,
            responder_key_hash=key_hash.hex() if key_hash is not None else None,
            responder_name=name.rfc4514_string() if name is not None else None,
            certificate_count=len(response.certificates),
        )
    except ValueError as exc:
        # e.g. several SingleResponses, which this summary does not model.
        raise OCSPError(f"cannot summarise the OCSP response: {exc}") from None
