"""The KMS's server identity as a client checks it (issue 13): pure functions, no Django.

A client accepts a certificate as "the KMS" only if, besides chaining to the pinned root:

* it was issued **directly by the server-identity CA whose public key the client pinned** at
  enrollment (SHA-256 of its SubjectPublicKeyInfo). The portal refuses that CA for every
  issuance but the KMS's own certificate, so no certificate any portal role can obtain
  passes;
* it names **this deployment**: the URI SAN ``urn:kmsportal:deployment:<uuid>`` the client
  pinned. Two deployments that share a root (or even a server-identity CA key) cannot pass
  for each other;
* it has the ``kms-server`` profile: extendedKeyUsage serverAuth, digitalSignature, not a CA;
* a **fresh stapled OCSP response**, signed by that same pinned CA key, says ``good``:
  no older than the client's maximum age (default 10 minutes), for exactly this serial.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import KMSError

__all__ = [
    "DEFAULT_MAX_STATUS_AGE",
    "DEPLOYMENT_URN_PREFIX",
    "STATUS_CLOCK_SKEW",
    "ServerStatusError",
    "check_server_status",
    "deployment_uri_problem",
    "server_identity_problem",
    "spki_pin_problem",
    "spki_sha256",
]

DEPLOYMENT_URN_PREFIX = "urn:kmsportal:deployment:"
_DEPLOYMENT_RE = re.compile(
    r"urn:kmsportal:deployment:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.ASCII,
)
_SPKI_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
#: How old a stapled status may be by default (the issue's bound).
DEFAULT_MAX_STATUS_AGE = timedelta(minutes=10)
#: A status "produced" up to this far in the client's future is still taken (clock skew).
STATUS_CLOCK_SKEW = timedelta(minutes=5)


class ServerStatusError(KMSError):
    """The stapled status cannot be relied on: stable ``code`` and a one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def spki_sha256(key_or_certificate: x509.Certificate | object) -> str:
    """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo of a certificate or public key."""
    key = (
        key_or_certificate.public_key()
        if isinstance(key_or_certificate, x509.Certificate)
        else key_or_certificate
    )
    der = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def deployment_uri_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _DEPLOYMENT_RE.fullmatch(value):
        return "a deployment identity looks like urn:kmsportal:deployment:<uuid>"
    return None


def spki_pin_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _SPKI_RE.fullmatch(value):
        return "an SPKI pin is 64 lower-case hex digits (SHA-256)"
    return None


def _uris(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def _profile_problem(leaf: x509.Certificate) -> str | None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no extendedKeyUsage (serverAuth is required)"
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "its extendedKeyUsage lacks serverAuth"
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no keyUsage (digitalSignature is required)"
    if not usage.digital_signature:
        return "its keyUsage lacks digitalSignature"
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return "it is a CA certificate"
    return None


def server_identity_problem(
    leaf: x509.Certificate, issuer: x509.Certificate, *, ca_spki_sha256: str, deployment: str
) -> str | None:
    """Why ``leaf`` (issued by ``issuer``, both from a path already validated to the pinned
    root) is not this deployment's server identity, or None."""
    if spki_sha256(issuer) != ca_spki_sha256:
        return (
            "it was not issued by the server-identity CA pinned at enrollment (issuer key "
            f"SHA-256 {spki_sha256(issuer)[:16]}…, pinned {ca_spki_sha256[:16]}…)"
        )
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return "it is not signed by the pinned server-identity CA"
    if deployment not in _uris(leaf):
        return f"it does not name this deployment ({deployment})"
    problem = _profile_problem(leaf)
    if problem:
        return f"it is not a kms-server certificate: {problem}"
    return None


def _verify_ocsp_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    algorithm = response.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _cert_id_matches(
    response: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate
) -> bool:
    if response.serial_number != leaf.serial_number:
        return False
    algorithm = response.hash_algorithm
    expected = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm).build()
    return (
        expected.issuer_name_hash == response.issuer_name_hash
        and expected.issuer_key_hash == response.issuer_key_hash
    )


def check_server_status(
    der: bytes,
    *,
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_STATUS_AGE,
) -> None:
    """The stapled OCSP response ``der`` must say ``good`` for ``leaf``, be signed by
    ``issuer`` itself (the pinned server-identity CA has no delegated responder), and be
    fresh: thisUpdate within ``max_age`` before ``now`` (and not in its future beyond the
    clock skew), nextUpdate after ``now``. Raises ServerStatusError: ``bad_server_status``,
    ``stale_server_status`` or ``server_certificate_revoked``."""
    if not der:
        raise ServerStatusError("bad_server_status", "the response carries no stapled status")
    try:
        response = ocsp.load_der_ocsp_response(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ServerStatusError(
            "bad_server_status", f"the stapled status is not an OCSP response: {exc}"
        ) from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ServerStatusError(
            "bad_server_status",
            f"the stapled status is an OCSP error ({response.response_status.name})",
        )
    try:
        if not _verify_ocsp_signature(response, issuer):
            raise ServerStatusError(
                "bad_server_status",
                "the stapled status is not signed by the pinned server-identity CA",
            )
        if not _cert_id_matches(response, leaf, issuer):
            raise ServerStatusError(
                "bad_server_status", "the stapled status is about another certificate"
            )
        status = response.certificate_status
        this_update = response.this_update_utc
        next_update = response.next_update_utc
    except ValueError as exc:  # e.g. several SingleResponses
        raise ServerStatusError(
            "bad_server_status", f"the stapled status cannot be read: {exc}"
        ) from None
    if status is ocsp.OCSPCertStatus.REVOKED:
        when = response.revocation_time_utc
        raise ServerStatusError(
            "server_certificate_revoked",
            f"the KMS's server certificate (serial {leaf.serial_number:X}) was revoked"
            + (f" on {when:%Y-%m-%d %H:%M} UTC" if when else "")
            + "; refusing to trust its response",
        )
    if status is not ocsp.OCSPCertStatus.GOOD:
        raise ServerStatusError(
            "bad_server_status", "the stapled status does not say the certificate is good"
        )
    if this_update > now + STATUS_CLOCK_SKEW:
        raise ServerStatusError(
            "stale_server_status",
            f"the stapled status is dated {this_update:%Y-%m-%d %H:%M:%S} UTC, in the future",
        )
    if now - this_update > max_age or (next_update is not None and next_update <= now):
        raise ServerStatusError(
            "stale_server_status",
            f"the stapled status of the KMS's certificate dates from "
            f"{this_update:%Y-%m-%d %H:%M:%S} UTC, older than the {int(max_age.total_seconds())} s "
            "this client accepts (a replayed or stale status)",
        )
