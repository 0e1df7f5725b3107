"""Where relying parties find a CA's CRL, certificate and OCSP responder."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class DistributionPoints:
    crl: str
    ca_issuers: str
    ocsp: str
    #: The delta CRL (FreshestCRL, RFC 5280 4.2.1.15, 5.2.6).
    delta_crl: str = ""


def ca_distribution_points(ca_name: str) -> DistributionPoints:
    """URLs written into every certificate ``ca_name`` signs (RFC 5280 4.2.1.13, 4.2.2.1):
    CRL distribution point, delta CRL (FreshestCRL), AIA caIssuers and AIA OCSP, under ``KMS_PUBLIC_URL``.

    Plain HTTP is right here: a relying party must not need TLS (whose certificate it may be
    checking) to fetch a CRL or ask OCSP, and both answers are signed.
    """
    base = settings.KMS_PUBLIC_URL.rstrip("/")
    return DistributionPoints(
        crl=f"{base}/pki/crl/{ca_name}.crl",
        delta_crl=f"{base}/pki/crl/{ca_name}-delta.crl",
        ca_issuers=f"{base}/pki/ca/{ca_name}.crt",
        ocsp=f"{base}/pki/ocsp/{ca_name}",
    )
