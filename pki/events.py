"""Audit event types written by the PKI (listed in the README)."""

from django.db import models


class PkiAction(models.TextChoices):
    CA_CREATED = "ca.created", "Certificate authority created"
    CA_DISABLED = "ca.disabled", "Certificate authority disabled"
    CA_REVOKED = "ca.revoked", "Certificate authority revoked (with everything it issued)"
    CERTIFICATE_ISSUED = "certificate.issued", "Certificate issued"
    CERTIFICATE_KEY_DELIVERED = (
        "certificate.key_delivered",
        "Generated key pair delivered (PKCS#12 download)",
    )
    CERTIFICATE_REVOKED = "certificate.revoked", "Certificate revoked"
    CERTIFICATE_RELEASED = "certificate.released", "Certificate hold released"
    CRL_PUBLISHED = "crl.published", "CRL published"
