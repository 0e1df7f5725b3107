"""The OCSP responder (RFC 6960) of every CA, and the CAs' delegated responder certificates.

Answers come from the database, never from a CRL: the status of a serial number is one
indexed lookup (unique (ca, serial_hex)), so a revocation is visible to OCSP the moment it
commits. ``good`` for a certificate the CA issued and has not revoked, ``revoked`` with the
revocation time and reason (certificateHold included), ``unknown`` for a serial the CA never
issued. A request for another issuer, or for a CA that does not exist, is ``unauthorized``;
anything that cannot be parsed is ``malformedRequest`` (unsigned error responses).

Signing (RFC 6960 4.2.2.2): each CA issues itself a delegated responder certificate (profile
``ocsp-responder``: EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck, at most 30 days) for an EC
P-256 key that is sealed under the master keyring like a CA key and loaded once per process
by `pki.signers`. It is renewed once it has less than :data:`RESPONDER_RENEW_BEFORE` left:
by ``manage.py publish_crls`` (cron) and, failing that, by the first OCSP request that needs
it. A CA that can no longer issue (disabled, revoked, expired) keeps using its last responder
while that is valid, then signs responses with its own key: the CA-signed path.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from django.db import transaction
from django.utils import timezone

from kmsportal.actors import Actor
from kmsportal.crypto.ocsp import (
    CertStatus,
    OCSPError,
    OCSPMalformedRequest,
    build_ocsp_error,
    build_ocsp_response,
    parse_ocsp_request,
    request_matches_issuer,
)
from kmsportal.crypto.profiles import get_profile
from kmsportal.crypto.signer import Signer
from kmsportal.crypto.x509 import KeyType, parse_subject

from .errors import PkiError
from .models import (
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateSource,
    CertificateStatus,
    OCSPResponder,
    serial_to_hex,
)
from .services.issuance import _issue_leaf, _record_issued
from .signers import (
    GeneratedCAKey,
    ca_signer,
    ocsp_responder_signer,
    ocsp_responder_signer_remember,
)

__all__ = [
    "OCSP_MAX_REQUEST_BYTES",
    "RESPONDER_RENEW_BEFORE",
    "RESPONSE_VALIDITY",
    "OCSPAnswer",
    "certificate_status_staple",
    "ocsp_respond",
    "ocsp_responder_current",
    "ocsp_responder_ensure",
]

logger = logging.getLogger(__name__)

#: nextUpdate of a response is thisUpdate plus this. Answers come from the database and are
#: current when made; this only bounds how long a client or cache may reuse one.
RESPONSE_VALIDITY = timedelta(hours=1)
#: A responder certificate (30 days) is replaced when less than this is left.
RESPONDER_RENEW_BEFORE = timedelta(days=10)
RESPONDER_KEY_TYPE = KeyType.ecp256
RESPONDER_PROFILE = "ocsp-responder"
#: A single-certificate request is about 100 bytes; anything near this is not one.
OCSP_MAX_REQUEST_BYTES = 64 * 1024
_MAX_SERIAL = 2**160


@functools.lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    """Parsed once per process per certificate (CA and responder certificates never change)."""
    return x509.load_der_x509_certificate(der)


# --- delegated responders --------------------------------------------------------------------


def ocsp_responder_current(
    *, ca: CertificateAuthority, now: datetime | None = None
) -> OCSPResponder | None:
    """The CA's newest responder whose certificate is valid now and not revoked, or None."""
    return (
        OCSPResponder.objects.select_related("certificate")
        .filter(
            ca_id=ca.pk,
            not_after__gt=now or timezone.now(),
            certificate__status=CertificateStatus.VALID,
        )
        .order_by("-not_after")
        .first()
    )


def _needs_renewal(
    responder: OCSPResponder | None, ca: CertificateAuthority, now: datetime
) -> bool:
    if responder is None:
        return True
    # A responder clipped to the CA's own notAfter cannot be bettered: keep it.
    return responder.not_after < now + RESPONDER_RENEW_BEFORE and responder.not_after < ca.not_after


def _can_issue(ca: CertificateAuthority, now: datetime) -> bool:
    # The server-identity CA issues nothing but the KMS's own certificate (issue 13), so it
    # has no delegated responder: it signs its OCSP responses itself, which is also what
    # clients check the stapled status of the KMS's certificate against (the pinned key).
    return ca.state == CAState.ACTIVE and ca.not_after > now and not ca.server_identity


@transaction.atomic
def ocsp_responder_ensure(*, ca: CertificateAuthority, actor: Actor = None) -> OCSPResponder | None:
    """The CA's usable delegated responder, issuing a new one first if there is none or the
    current one is due for renewal and the CA can still issue. None: the CA signs itself.

    The CA row is locked and the check made again under the lock, so concurrent callers
    issue one responder, not one each. The issuance is audited as ``certificate.issued``.
    """
    locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    now = timezone.now()
    current = ocsp_responder_current(ca=locked, now=now)
    if not _needs_renewal(current, locked, now) or not _can_issue(locked, now):
        return current
    return _responder_issue(ca=locked, actor=actor)


def _responder_issue(*, ca: CertificateAuthority, actor: Actor) -> OCSPResponder:
    if ca.server_identity:
        raise PkiError(f"CA {ca.name} is the server-identity CA; it has no delegated responder")
    profile = get_profile(RESPONDER_PROFILE)
    subject = parse_subject(f"CN={ca.name} OCSP responder"[:64])
    key = GeneratedCAKey(RESPONDER_KEY_TYPE)
    signer = ca_signer(ca)
    _, record = _issue_leaf(
        ca=ca,
        signer=signer,
        subject=subject,
        public_key=key.public_key,
        sans=[],
        profile=profile,
        days=None,
        source=CertificateSource.OCSP,
        actor=actor,
    )
    responder = OCSPResponder(ca=ca, certificate=record, not_after=record.not_after)
    responder.sealed_private_key = key.seal(aad=responder.aad)
    responder.save(force_insert=True)
    _record_issued(actor=actor, record=record)
    new_signer = key.signer
    transaction.on_commit(lambda: ocsp_responder_signer_remember(responder, new_signer))
    return responder


def _signing_identity(
    ca: CertificateAuthority, issuer: x509.Certificate, now: datetime
) -> tuple[x509.Certificate, Signer]:
    """(responder certificate, signer): the delegated responder, renewed if due, else the CA."""
    responder = ocsp_responder_current(ca=ca, now=now)
    if _needs_renewal(responder, ca, now) and _can_issue(ca, now):
        try:
            responder = ocsp_responder_ensure(ca=ca) or responder
        except PkiError:
            # Keep answering (with the old responder or the CA key); the cron job retries.
            logger.exception("cannot issue an OCSP responder certificate for CA %s", ca.name)
    if responder is not None:
        return (
            _certificate(bytes(responder.certificate.certificate_der)),
            ocsp_responder_signer(responder),
        )
    full = CertificateAuthority.objects.get(pk=ca.pk)  # with the sealed key, for the signer
    return issuer, ca_signer(full)


# --- answering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OCSPAnswer:
    """The DER OCSPResponse, and until when an HTTP cache may keep it (None: not at all,
    e.g. an error or a response to a request with a nonce)."""

    der: bytes
    cacheable_until: datetime | None = None


def _status(
    ca: CertificateAuthority, serial_number: int
) -> tuple[CertStatus, datetime | None, str | None]:
    if not 0 < serial_number < _MAX_SERIAL:
        return CertStatus.UNKNOWN, None, None
    row = (
        Certificate.objects.filter(ca_id=ca.pk, serial_hex=serial_to_hex(serial_number))
        .values_list("status", "revoked_at", "revocation_reason")
        .first()
    )
    if row is None:
        return CertStatus.UNKNOWN, None, None
    status, revoked_at, reason = row
    if status != CertificateStatus.REVOKED:
        return CertStatus.GOOD, None, None
    return CertStatus.REVOKED, revoked_at, reason or None


def ocsp_respond(*, ca_name: str, request_der: bytes) -> OCSPAnswer:
    """Answer one DER OCSPRequest for the CA called ``ca_name``.

    Always returns an OCSPResponse (HTTP 200 either way, RFC 6960 A.1): a signed one with
    the certificate's status and the request's nonce echoed, or an unsigned error status.
    """
    try:
        parsed = parse_ocsp_request(request_der)
    except OCSPMalformedRequest:
        return OCSPAnswer(build_ocsp_error("malformedRequest"))
    ca = CertificateAuthority.objects.defer("sealed_private_key").filter(name=ca_name).first()
    if ca is None:
        return OCSPAnswer(build_ocsp_error("unauthorized"))
    issuer = _certificate(bytes(ca.certificate_der))
    if not request_matches_issuer(parsed, issuer):
        # RFC 6960 2.3: the responder is not authoritative for this certificate.
        return OCSPAnswer(build_ocsp_error("unauthorized"))
    now = timezone.now().replace(microsecond=0)
    status, revoked_at, reason = _status(ca, parsed.serial_number)
    next_update = now + RESPONSE_VALIDITY
    try:
        responder_certificate, signer = _signing_identity(ca, issuer, now)
        der = build_ocsp_response(
            parsed_request=parsed,
            issuer_certificate=issuer,
            responder_certificate=responder_certificate,
            signer=signer,
            status=status,
            revocation_time=revoked_at,
            revocation_reason=reason,
            this_update=now,
            next_update=next_update,
            subject_certificate=None,
        )
    except (PkiError, OCSPError):
        logger.exception("cannot answer an OCSP request for CA %s", ca.name)
        return OCSPAnswer(build_ocsp_error("internalError"))
    return OCSPAnswer(der, cacheable_until=None if parsed.nonce is not None else next_update)


def certificate_status_staple(*, certificate: Certificate) -> bytes:
    """A signed OCSP response (DER) for one of our certificates, as the responder would
    answer a request without a nonce: what the KMS staples to its own certificate in every
    key fetch (vault.server_identity caches it in the shared cache and refreshes it).

    PkiError if no successful response can be made."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp as x509_ocsp

    ca = CertificateAuthority.objects.defer("sealed_private_key").get(pk=certificate.ca_id)
    leaf = _certificate(bytes(certificate.certificate_der))
    issuer = _certificate(bytes(ca.certificate_der))
    request = (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, issuer, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = ocsp_respond(ca_name=ca.name, request_der=request)
    if x509_ocsp.load_der_ocsp_response(answer.der).response_status is not (
        x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    ):
        raise PkiError(f"CA {ca.name} could not answer for certificate {certificate.serial_hex}")
    return answer.der
