"""Certificate authorities and the certificates they issued.

A CA's private key exists only sealed (`CertificateAuthority.sealed_private_key`, AES-256-GCM
under the master keyring, AAD naming the CA row and the purpose). Only `pki.signers` unseals
it, once per process, into a signer; nothing else ever sees the key bytes.

Serial numbers are 159-bit integers, too large for any integer column on SQLite or
PostgreSQL; they are stored as 40 upper-case hex digits, zero-padded (`serial_hex`), so that
equality, ordering and the per-CA uniqueness constraint work the same on both databases.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from kmsportal.crypto.x509 import KeyType
from kmsportal.two_person import TwoPersonRequest

#: CA names appear in URLs (`/pki/ca/<name>.crt`, the CRL and OCSP addresses in every
#: certificate): lower-case ASCII letters, digits and hyphens.
CA_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
CA_NAME_MESSAGE = (
    "Use 1-64 lower-case letters, digits or '-', starting and ending with a letter or digit."
)
SERIAL_HEX_DIGITS = 40
CRL_VALIDITY_DAYS_DEFAULT = 7

KEY_TYPE_CHOICES = [(k.value, k.label) for k in KeyType]


def serial_to_hex(serial_number: int) -> str:
    """The stored form of a serial number: 40 upper-case hex digits, zero-padded."""
    return format(serial_number, f"0{SERIAL_HEX_DIGITS}X")


def serial_display(serial_hex: str) -> str:
    """Serial as tools print it: upper-case hex, no padding beyond an even number of digits."""
    digits = serial_hex.lstrip("0") or "0"
    return digits.zfill(len(digits) + len(digits) % 2)


def fingerprint_display(fingerprint: str) -> str:
    """SHA-256 fingerprint with colons between bytes, as browsers and openssl show it."""
    return ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))


class CAState(models.TextChoices):
    ACTIVE = "active", "active"
    DISABLED = "disabled", "disabled"
    REVOKED = "revoked", "revoked"


class CertificateStatus(models.TextChoices):
    VALID = "valid", "valid"
    REVOKED = "revoked", "revoked"


class CertificateSource(models.TextChoices):
    CSR = "csr", "from a CSR"
    GENERATED = "generated", "generated key pair (PKCS#12)"
    CA = "ca", "intermediate CA (key held by the portal)"
    OCSP = "ocsp", "delegated OCSP responder (key held by the portal)"


class CRLTrigger(models.TextChoices):
    """Why a CRL was published."""

    CA_CREATED = "ca-created", "CA created"
    REVOCATION = "revocation", "revocation"
    RELEASE = "release", "certificate hold released"
    SCHEDULED = "scheduled", "scheduled (publish_crls)"
    MANUAL = "manual", "published by an operator"
    FIRST_DOWNLOAD = "first-download", "first download (no CRL existed)"


class CertificateAuthority(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=64, unique=True, validators=[RegexValidator(CA_NAME_PATTERN, CA_NAME_MESSAGE)]
    )
    # RFC 4514 form, most specific attribute first (kmsportal.crypto.x509.format_name).
    subject = models.CharField(max_length=1024)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    key_type = models.CharField(max_length=16, choices=KEY_TYPE_CHOICES)
    # AES-256-GCM blob from kmsportal.crypto.envelope over the PKCS#8 DER private key; AAD
    # is `aad` below. Read only by pki.signers.
    sealed_private_key = models.BinaryField()
    certificate_pem = models.TextField()
    certificate_der = models.BinaryField()
    serial_hex = models.CharField(max_length=SERIAL_HEX_DIGITS)
    fingerprint_sha256 = models.CharField(max_length=64, db_index=True)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    # None: no limit (RFC 5280 4.2.1.9 pathLenConstraint absent).
    path_length = models.PositiveSmallIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=CAState.choices, default=CAState.ACTIVE)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Revocation of a CA is issue 6's; the fields exist now.
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=32, blank=True)
    # CRL publication settings (used by the revocation issue).
    crl_validity_days = models.PositiveSmallIntegerField(
        default=CRL_VALIDITY_DAYS_DEFAULT, validators=[MinValueValidator(1), MaxValueValidator(366)]
    )
    # The deployment's server-identity CA (issue 13): it signs the KMS's own `kms-server`
    # certificate and nothing else. Every issuance service refuses it (and the `kms-server`
    # profile) except `server_identity_certificate_issue`; clients pin its public key.
    server_identity = models.BooleanField(default=False, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # At most one server-identity CA per deployment.
            models.UniqueConstraint(
                fields=["server_identity"],
                condition=models.Q(server_identity=True),
                name="pki_one_server_identity_ca",
            )
        ]
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"
        default_permissions = ("view",)
        permissions = [
            ("manage_certificateauthority", "Can create and disable certificate authorities"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed private key to this CA row and its purpose."""
        return f"pki.CertificateAuthority:{self.id}:private-key".encode()

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    @property
    def is_active(self) -> bool:
        return self.state == CAState.ACTIVE

    @property
    def is_expired(self) -> bool:
        return self.not_after <= timezone.now()

    @property
    def serial_number_display(self) -> str:
        return serial_display(self.serial_hex)

    @property
    def fingerprint_sha256_display(self) -> str:
        return fingerprint_display(self.fingerprint_sha256)


class Certificate(models.Model):
    """A certificate one of our CAs signed: leaves, and the certificates of intermediates."""

    ca = models.ForeignKey(
        CertificateAuthority, on_delete=models.PROTECT, related_name="certificates"
    )
    serial_hex = models.CharField(max_length=SERIAL_HEX_DIGITS)
    subject = models.CharField(max_length=1024, blank=True)
    # One SAN per line in `type:value` form (dns:, ip:, email:, uri:), searchable as text
    # on both databases.
    sans = models.TextField(blank=True)
    profile = models.CharField(max_length=32)
    public_key = models.CharField(max_length=32)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(db_index=True)
    certificate_pem = models.TextField()
    certificate_der = models.BinaryField()
    # SHA-256 of the DER, 64 upper-case hex digits.
    fingerprint_sha256 = models.CharField(max_length=64, db_index=True)
    status = models.CharField(
        max_length=16, choices=CertificateStatus.choices, default=CertificateStatus.VALID
    )
    # Revocation (RFC 5280 reasonCode name, revocation and invalidity dates): issue 6.
    revocation_reason = models.CharField(max_length=32, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    invalidity_date = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=CertificateSource.choices)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    issued_by_name = models.CharField(max_length=150)
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        default_permissions = ("view",)
        permissions = [
            ("issue_certificate", "Can issue certificates"),
            ("revoke_certificate", "Can revoke certificates"),
        ]
        constraints = [
            # RFC 5280 4.1.2.2: the serial is unique per issuer. Issuance retries with a
            # fresh serial when this fires (it never should with 159 random bits).
            models.UniqueConstraint(fields=["ca", "serial_hex"], name="pki_certificate_serial"),
        ]
        indexes = [
            models.Index(fields=["ca", "id"], name="pki_cert_ca_id"),
            # Delta CRLs read the revocations since their base CRL.
            models.Index(fields=["ca", "revoked_at"], name="pki_cert_ca_revoked_at"),
            models.Index(fields=["status", "not_after"], name="pki_cert_status_expiry"),
            # The certificate list filtered by status, newest first (keyset on id).
            models.Index(fields=["status", "id"], name="pki_cert_status_id"),
            # The CRL reads exactly the revoked rows of one CA.
            models.Index(fields=["ca", "status"], name="pki_cert_ca_status"),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} ({self.serial_number_display})"

    @property
    def san_list(self) -> list[str]:
        return [line for line in self.sans.splitlines() if line]

    @property
    def serial_number_display(self) -> str:
        return serial_display(self.serial_hex)

    @property
    def fingerprint_sha256_display(self) -> str:
        return fingerprint_display(self.fingerprint_sha256)

    @property
    def is_revoked(self) -> bool:
        return self.status == CertificateStatus.REVOKED

    @property
    def is_on_hold(self) -> bool:
        """Revoked with reason certificateHold: the only revocation that can be undone."""
        return self.is_revoked and self.revocation_reason == "certificateHold"

    @property
    def is_expired(self) -> bool:
        return self.not_after <= timezone.now()


class RevocationList(models.Model):
    """One CRL as published: the DER bytes exactly as signed, and what the pages show.

    Downloads serve ``crl_der`` of the newest row as stored (no parsing, no signing).
    Every publication adds a row; only the newest keeps its bytes (``crl_der`` of older rows
    is set to NULL when a newer one is stored), so the history of numbers, times and hashes
    stays while the space does not grow with every revocation.

    ``crl_number`` is strictly increasing per CA (RFC 5280 5.2.3): it is drawn while the CA
    row is locked, and the unique constraint is the backstop.
    """

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="crls")
    crl_number = models.PositiveBigIntegerField()
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    entry_count = models.PositiveIntegerField()
    # NULL once a newer CRL of the same CA is stored.
    crl_der = models.BinaryField(null=True)
    size = models.PositiveIntegerField()
    # SHA-256 of crl_der, 64 lower-case hex digits: the HTTP ETag.
    sha256 = models.CharField(max_length=64)
    trigger = models.CharField(max_length=16, choices=CRLTrigger.choices)
    published_by_name = models.CharField(max_length=150)
    published_at = models.DateTimeField(default=timezone.now)
    #: A delta CRL (RFC 5280 5.2.4): the changes since the complete CRL ``base_crl_number``.
    #: Complete and delta CRLs of a CA share one number sequence (RFC 5280 5.2.3).
    is_delta = models.BooleanField(default=False)
    base_crl_number = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-crl_number"]
        verbose_name = "certificate revocation list"
        default_permissions = ()
        permissions = [("publish_crl", "Can publish CRLs on demand")]
        constraints = [
            models.UniqueConstraint(fields=["ca", "crl_number"], name="pki_crl_number"),
        ]
        indexes = [
            # The newest complete (or delta) CRL of a CA, for downloads.
            models.Index(fields=["ca", "is_delta", "crl_number"], name="pki_crl_kind_number"),
        ]

    def __str__(self) -> str:
        return f"CRL #{self.crl_number} of {self.ca_id}"

    @property
    def lifetime(self) -> timedelta:
        return self.next_update - self.this_update

    @property
    def republish_after(self) -> datetime:
        """Half the lifetime: from here on `publish_crls` replaces it."""
        return self.this_update + self.lifetime / 2

    @property
    def is_expired(self) -> bool:
        return self.next_update <= timezone.now()


#: A CA revocation request not approved within this time lapses (status expired).
CA_REVOCATION_REQUEST_TTL = timedelta(days=7)


class CARevocationRequest(TwoPersonRequest):
    """The first half of the two-person rule for revoking a CA: one person asks, a different
    one approves, and only the approval revokes (with everything below the CA).

    ``certificate`` is the CA's certificate (profile sub-ca, on its parent's CRL); ``ca`` is
    the intermediate CA it certifies, kept for the pages. Reason and invalidity date are
    checked as :func:`pki.revocation.certificate_revoke` checks them, when asked and again
    when approved.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved", "approved (revoked)"
        REJECTED = "rejected", "rejected"
        WITHDRAWN = "withdrawn", "withdrawn"
        EXPIRED = "expired", "expired"

    certificate = models.ForeignKey(
        Certificate, on_delete=models.PROTECT, related_name="ca_revocation_requests"
    )
    ca = models.ForeignKey(
        CertificateAuthority, on_delete=models.PROTECT, related_name="revocation_requests"
    )
    # RFC 5280 CRLReason name (never certificateHold: a CA cannot be put on hold).
    reason = models.CharField(max_length=32)
    invalidity_date = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True, max_length=1000)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    decision_comment = models.TextField(blank=True, max_length=1000)

    class Meta:
        ordering = ["-requested_at", "-id"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["certificate"],
                condition=models.Q(status="pending"),
                name="pki_one_pending_ca_revocation_request",
            )
        ]

    def __str__(self) -> str:
        return f"revoke CA {self.ca_id} ({self.get_status_display()})"


class OCSPResponder(models.Model):
    """A delegated OCSP responder (RFC 6960 4.2.2.2): a short-lived certificate the CA issued
    to itself with id-kp-OCSPSigning and id-pkix-ocsp-nocheck, and its private key, sealed
    under the master keyring (AAD naming this row) and opened only by `pki.signers`.

    The CA key signs one responder certificate per renewal instead of every response.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ca = models.ForeignKey(
        CertificateAuthority, on_delete=models.PROTECT, related_name="ocsp_responders"
    )
    certificate = models.OneToOneField(
        Certificate, on_delete=models.PROTECT, related_name="ocsp_responder"
    )
    sealed_private_key = models.BinaryField()
    not_after = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-not_after"]
        default_permissions = ()
        indexes = [models.Index(fields=["ca", "not_after"], name="pki_ocsp_ca_not_after")]

    def __str__(self) -> str:
        return f"OCSP responder {self.certificate_id} of {self.ca_id}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed key to this responder row and its purpose."""
        return f"pki.OCSPResponder:{self.id}:private-key".encode()


#: Longest validity, in days, of a CA and of an end-entity certificate (the pages and the
#: admin API accept no more).
CA_DAYS_MAX = 36500
LEAF_DAYS_MAX = 3650
#: Largest CSR or certificate the pages accept, uploaded or pasted (the X.509 layer's limit).
UPLOAD_MAX_BYTES = 64 * 1024
#: Largest chain (PEM bundle) the validation page accepts (the X.509 layer's bundle limit).
CHAIN_UPLOAD_MAX_BYTES = 1024 * 1024


class GeneratedKeyDelivery(models.Model):
    """One submission of the generated-key issuance form, and its file until downloaded.

    The form carries a random idempotency token; its hash is unique here, so a second submit
    of the same form (a double click, a reload, a second worker) finds this row instead of
    issuing again. The PKCS#12 (or PEM bundle), already encrypted under the operator's
    password, is kept sealed under the master keyring only until its one download or
    `DELIVERY_TTL`, then erased: the private key is never kept longer than that.
    """

    DELIVERY_TTL = timedelta(minutes=10)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_hash = models.CharField(max_length=64, unique=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    filename = models.CharField(max_length=200, blank=True)
    content_type = models.CharField(max_length=64, blank=True)
    sealed_bundle = models.BinaryField(default=b"", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"generated key delivery {self.id}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed file to this row and its purpose."""
        return f"pki.GeneratedKeyDelivery:{self.id}:bundle".encode()

    @property
    def expires_at(self) -> datetime:
        return self.created_at + self.DELIVERY_TTL

    @property
    def downloadable(self) -> bool:
        return bool(self.sealed_bundle) and timezone.now() < self.expires_at
