"""What the admin API's PKI routers share: the portal's permissions, media types, lookups
that answer 404, refusals as problem documents, and how a certificate is rendered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import User

from kmsportal.errors import KMSError
from pki import selectors
from pki.errors import PkiError
from pki.models import (
    CA_NAME_PATTERN,
    Certificate,
    CertificateAuthority,
)

VIEW_CA = selectors.VIEW_CA
VIEW_CERTIFICATE = selectors.VIEW_CERTIFICATE
VIEW_CA_REVOCATION_REQUEST = selectors.VIEW_CA_REVOCATION_REQUEST
MANAGE_CA = "pki.manage_certificateauthority"
ISSUE = "pki.issue_certificate"
REVOKE = selectors.REVOKE
PUBLISH_CRL = "pki.publish_crl"

PEM_TYPE = "application/x-pem-file"
DER_CERTIFICATE_TYPE = "application/pkix-cert"


@contextmanager
def refused(code: str, status: int = 409) -> Iterator[None]:
    """A service's refusal as a problem document: ``code`` unless the error brings its own."""
    try:
        yield
    except PkiError as exc:
        # A subclass that names its own problem keeps it; the plain PkiError is this one.
        if type(exc) is not PkiError and getattr(exc, "code", None) != getattr(
            PkiError, "code", None
        ):
            raise
        raise KMSError(str(exc), code=code, status=status) from None


def not_found(what: str) -> KMSError:
    return KMSError(f"No such {what}.", code="not_found", status=404)


def ca_or_404(user: User, name: str) -> CertificateAuthority:
    # A name that cannot be a CA's is no CA (and never reaches the database).
    ca = selectors.ca_get(user=user, name=name) if re.fullmatch(CA_NAME_PATTERN, name) else None
    if ca is None:
        raise not_found("certificate authority")
    return ca


def certificate_or_404(user: User, pk: int) -> Certificate:
    certificate = selectors.certificate_get(user=user, pk=pk)
    if certificate is None:
        raise not_found("certificate")
    return certificate


def certificate_out(certificate: Certificate) -> dict[str, object]:
    return {
        "id": certificate.pk,
        "ca": certificate.ca.name,
        "serial": certificate.serial_number_display,
        "subject": certificate.subject,
        "sans": certificate.san_list,
        "profile": certificate.profile,
        "public_key": certificate.public_key,
        "not_before": certificate.not_before,
        "not_after": certificate.not_after,
        "status": certificate.status,
        "revocation_reason": certificate.revocation_reason,
        "revoked_at": certificate.revoked_at,
        "invalidity_date": certificate.invalidity_date,
        "source": certificate.source,
        "issued_by": certificate.issued_by_name,
        "issued_at": certificate.issued_at,
    }


def summary_out(summary: Any) -> dict[str, object]:
    """A decoded certificate (kmsportal.crypto.x509.CertificateSummary) as the previews show it."""
    return {
        "subject": summary.subject,
        "issuer": summary.issuer,
        "not_before": summary.not_before,
        "not_after": summary.not_after,
        "public_key": summary.public_key,
        "signature_algorithm": summary.signature_algorithm,
        "subject_alternative_names": list(summary.subject_alternative_names),
        "key_usage": list(summary.key_usage),
        "extended_key_usage": list(summary.extended_key_usage),
        "is_ca": summary.is_ca,
        "path_length": summary.path_length,
        "crl_distribution_points": list(summary.crl_distribution_points),
        "ca_issuers_urls": list(summary.ca_issuers_urls),
        "ocsp_urls": list(summary.ocsp_urls),
    }
