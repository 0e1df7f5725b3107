"""Audit event types written by the PKI (listed in the README)."""

from django.db import models


class PkiAction(models.TextChoices):
    CA_CREATED = "ca.created", "Certificate authority created"
    CA_IMPORTED = "ca.imported", "Certificate authority imported (certificate and key)"
    CA_DISABLED = "ca.disabled", "Certificate authority disabled"
    CA_REISSUED = "ca.reissued", "CA certificate re-issued with the current public URL"
    CA_REVOKED = "ca.revoked", "Certificate authority revoked (with everything it issued)"
    CA_REVOCATION_REQUESTED = "ca.revocation_requested", "CA revocation requested"
    CA_REVOCATION_APPROVED = "ca.revocation_approved", "CA revocation approved (revoked)"
    CA_REVOCATION_REJECTED = "ca.revocation_rejected", "CA revocation request rejected"
    CA_REVOCATION_WITHDRAWN = "ca.revocation_withdrawn", "CA revocation request withdrawn"
    CA_REVOCATION_EXPIRED = "ca.revocation_expired", "CA revocation request expired undecided"
    CERTIFICATE_ISSUED = "certificate.issued", "Certificate issued"
    CERTIFICATE_KEY_DELIVERED = (
        "certificate.key_delivered",
        "Generated key pair delivered (PKCS#12 download)",
    )
    CERTIFICATE_REVOKED = "certificate.revoked", "Certificate revoked"
    CERTIFICATE_RELEASED = "certificate.released", "Certificate hold released"
    CRL_PUBLISHED = "crl.published", "CRL published"
