"""Symmetric keys, their versions, and two-person destruction requests.

Key material exists only sealed (`KeyVersion.sealed_material`, AES-256-GCM under the master
keyring, AAD naming the key and the version number). Destruction erases that column; the
rows, their fingerprints and the audit trail stay.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from kmsportal.two_person import TwoPersonChange, TwoPersonRequest

from .lifecycle import KeyState, VersionState

KEY_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-_.]{0,98}[a-z0-9])?$"
ROTATION_DAYS_MIN = 1
ROTATION_DAYS_MAX = 3650
DESTRUCTION_WAIT_MIN_DAYS = 7
DESTRUCTION_WAIT_MAX_DAYS = 30
DESTRUCTION_WAIT_DEFAULT_DAYS = 30
DESTRUCTION_REQUEST_TTL = timedelta(hours=24)


class Algorithm(models.TextChoices):
    """Key types (issue 17). The stored value, lower-cased, is the type name that
    `kmsportal.crypto.operations`, `key_create --type` and the API use."""

    AES_256_GCM = "AES-256-GCM", "AES-256-GCM (encrypt, decrypt, data keys)"
    HMAC_SHA256 = "HMAC-SHA256", "HMAC-SHA256 (MAC)"
    RSA_3072 = "RSA-3072", "RSA-3072 (PSS signatures, OAEP decryption)"
    RSA_4096 = "RSA-4096", "RSA-4096 (PSS signatures, OAEP decryption)"
    ECDSA_P256 = "ECDSA-P256", "ECDSA P-256 (signatures)"
    ECDSA_P384 = "ECDSA-P384", "ECDSA P-384 (signatures)"
    ED25519 = "ED25519", "Ed25519 (signatures)"

    @classmethod
    def from_type(cls, key_type: str) -> Algorithm:
        """The choice for a type name such as ``rsa-3072`` (ValueError if unknown)."""
        for choice in cls:
            if choice.value.lower() == key_type.strip().lower():
                return choice
        raise ValueError(f"unknown key type {key_type!r}")


class ExportPolicy(models.TextChoices):
    """Who must agree before a client may be granted this key's material (a fetch grant).

    Ordered from the strictest: changing to a later one weakens the policy and is itself a
    two-person request (vault.approvals)."""

    NEVER = "never", "never: no client may fetch it"
    TWO_PERSON = "two-person", "two-person: a second custodian approves each grant"
    SINGLE = "single", "single custodian (low-sensitivity keys only)"

    @classmethod
    def strictness(cls, value: str) -> int:
        return {cls.NEVER: 2, cls.TWO_PERSON: 1, cls.SINGLE: 0}[cls(value)]


class SymmetricKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[
            RegexValidator(
                KEY_NAME_PATTERN,
                "Use 1-100 lowercase letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit.",
            )
        ],
    )
    description = models.TextField(blank=True, max_length=1000)
    algorithm = models.CharField(
        max_length=20, choices=Algorithm.choices, default=Algorithm.AES_256_GCM
    )
    state = models.CharField(max_length=24, choices=KeyState.choices, default=KeyState.PRE_ACTIVE)
    rotation_period_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(ROTATION_DAYS_MIN), MaxValueValidator(ROTATION_DAYS_MAX)],
    )
    # Versions below this number may not be used to decrypt any more (nor be distributed).
    min_decryption_version = models.PositiveIntegerField(default=1)
    activate_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    next_rotation_at = models.DateTimeField(null=True, blank=True, db_index=True)
    compromised_at = models.DateTimeField(null=True, blank=True)
    compromise_reason = models.TextField(blank=True)
    # Pending destruction: when it becomes due, and where a cancel returns to.
    destroy_after = models.DateTimeField(null=True, blank=True, db_index=True)
    state_before_destruction = models.CharField(max_length=24, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    # Operations policy (issue 17): context names every encrypt/decrypt must carry, and
    # whether a version reported compromised may still decrypt (audited either way).
    required_context_keys = models.JSONField(default=list, blank=True)
    allow_compromised_decrypt = models.BooleanField(default=False)
    export_policy = models.CharField(
        max_length=12, choices=ExportPolicy.choices, default=ExportPolicy.TWO_PERSON
    )

    class Meta:
        ordering = ["name"]
        permissions = [
            ("rotate_symmetrickey", "Can rotate keys"),
            ("export_policy_symmetrickey", "Can set and approve key export policies"),
            ("suspend_symmetrickey", "Can activate, suspend, resume and deactivate keys"),
            ("compromise_symmetrickey", "Can report keys compromised"),
            ("destroy_symmetrickey", "Can request, approve and cancel key destruction"),
        ]
        indexes = [models.Index(fields=["state", "name"], name="vault_key_state_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def key_type(self) -> str:
        """The type name used by the operations API, e.g. ``aes-256-gcm``, ``ed25519``."""
        return self.algorithm.lower()

    @property
    def is_destroyed(self) -> bool:
        return self.state in (KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED)

    @property
    def rotation_overdue(self) -> bool:
        return (
            self.state == KeyState.ACTIVE
            and self.next_rotation_at is not None
            and self.next_rotation_at <= timezone.now()
        )


class KeyOrigin(models.TextChoices):
    """Where a version's material came from (AWS KMS calls it the key's origin)."""

    GENERATED = "generated", "generated by the KMS"
    EXTERNAL = "external", "imported (bring your own key)"


class KeyVersion(models.Model):
    key = models.ForeignKey(SymmetricKey, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    origin = models.CharField(max_length=16, choices=KeyOrigin.choices, default=KeyOrigin.GENERATED)
    # AES-256-GCM blob from kmsportal.crypto.envelope; NULL once destroyed (crypto-shredded).
    sealed_material = models.BinaryField(null=True)
    # AES: key check value, first 3 bytes of AES-256-ECB(key, 0^128), the classic KCV that
    # HSMs print, so a custodian can compare with another system without revealing the key.
    # HMAC: first 3 bytes of HMAC(key, 0^128). Asymmetric: SHA-256 of the public key's SPKI.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=24, choices=VersionState.choices)
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    compromised_at = models.DateTimeField(null=True, blank=True)
    compromise_reason = models.TextField(blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key", "-number"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["key", "number"], name="vault_version_unique_number"),
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(is_primary=True), name="vault_one_primary"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key.name} v{self.number}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed material to this key and version number."""
        return f"vault.KeyVersion:{self.key_id}:{self.number}".encode()

    @property
    def is_destroyed(self) -> bool:
        return self.state in (VersionState.DESTROYED, VersionState.DESTROYED_COMPROMISED)


IMPORT_TOKEN_TTL = timedelta(hours=24)


class KeyImportToken(models.Model):
    """A one-time RSA wrapping key for importing key material (bring your own key).

    The public key and an import token go to the key's owner, who wraps AES-256 material
    with them (AWS KMS RSA_AES_KEY_WRAP_SHA_256). Only the SHA-256 of the token is stored.
    The private key is sealed by the key backend (with pkcs11 under a token wrapping key of
    its own) and destroyed when the token is used or expires unused and is swept.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # An existing key (the import becomes its new primary version) or a new key's name.
    key_name = models.CharField(max_length=100)
    token_sha256 = models.CharField(max_length=64, unique=True)
    public_key_pem = models.TextField()
    key_size = models.PositiveSmallIntegerField()
    # seal_material of the PKCS#8 DER private key; NULL once used (destroyed).
    sealed_private_key = models.BinaryField(null=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    imported_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"import into {self.key_name}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed private key to this import token row."""
        return f"vault.KeyImportToken:{self.id}:private-key".encode()

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and self.expires_at > timezone.now()


class DestructionRequest(TwoPersonRequest):
    """The first half of the two-person rule: one custodian asks, a different one approves."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved", "approved"
        REJECTED = "rejected", "rejected"
        WITHDRAWN = "withdrawn", "withdrawn"
        EXPIRED = "expired", "expired"

    key = models.ForeignKey(
        SymmetricKey, on_delete=models.PROTECT, related_name="destruction_requests"
    )
    waiting_days = models.PositiveSmallIntegerField(
        validators=[
            MinValueValidator(DESTRUCTION_WAIT_MIN_DAYS),
            MaxValueValidator(DESTRUCTION_WAIT_MAX_DAYS),
        ]
    )
    reason = models.TextField(blank=True, max_length=1000)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(status="pending"),
                name="vault_one_pending_destruction_request",
            )
        ]

    def __str__(self) -> str:
        return f"destroy {self.key.name} ({self.get_status_display()})"


# --- distribution: client services, grants, the delivery ledger, the replay store -------

CLIENT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
ENROLLMENT_TOKEN_TTL = timedelta(hours=24)


class ClientState(models.TextChoices):
    ACTIVE = "active", "active"
    SUSPENDED = "suspended", "suspended"
    REVOKED = "revoked", "revoked"


class Client(models.Model):
    """A service that fetches keys through the client API with its own certificate.

    Clients are not users: they authenticate every request with a signature made by the key
    behind their `kms-client` certificate, which this portal's identity CA issued at
    enrollment. The enrollment token is stored only as a SHA-256 hash and works once.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(
                CLIENT_NAME_PATTERN,
                "Use 1-64 lowercase letters, digits or '-', starting and ending with a letter "
                "or digit.",
            )
        ],
    )
    description = models.TextField(blank=True, max_length=1000)
    state = models.CharField(max_length=12, choices=ClientState.choices, default=ClientState.ACTIVE)
    certificate = models.ForeignKey(
        "pki.Certificate", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Enrollment (issue 13): the token never crosses the wire and is never stored. What is
    # stored is SHA-256 of the token id derived from it (the lookup; `kmsportal.crypto.
    # protocol.enrollment_token_keys`) and the token's MAC key, sealed under the master
    # keyring with AAD naming this row and that lookup, so a database reader cannot use a
    # pending token either. Both are cleared when the token is spent.
    enrollment_token_hash = models.CharField(max_length=64, blank=True)
    enrollment_mac_key_sealed = models.BinaryField(blank=True, default=b"")
    enrollment_token_expires_at = models.DateTimeField(null=True, blank=True)
    # Who was handed the newest enrollment token, and when: the unused one while
    # `enrollment_token_hash` is set, afterwards the one the current certificate was enrolled
    # with. A grant's confirmation page shows them (blank for tokens issued before they were
    # recorded).
    enrollment_token_issued_to_name = models.CharField(max_length=150, blank=True)
    enrollment_token_issued_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_unused_token(self) -> bool:
        """An enrollment token was issued and is neither spent, voided nor expired."""
        expires = self.enrollment_token_expires_at
        return bool(self.enrollment_token_hash) and (expires is None or expires > timezone.now())

    def enrollment_mac_key_aad(self, lookup: str) -> bytes:
        """AAD of the sealed enrollment MAC key: this row and the token it belongs to."""
        return f"vault.Client:{self.id}:enrollment-mac-key:{lookup}".encode()


class GrantVersions(models.TextChoices):
    PRIMARY = "primary", "primary version only"
    ALL = "all", "every version that may decrypt"


class Grant(models.Model):
    """Client X may fetch key Y (which versions, until when)."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="grants")
    key = models.ForeignKey(SymmetricKey, on_delete=models.PROTECT, related_name="grants")
    versions = models.CharField(
        max_length=8, choices=GrantVersions.choices, default=GrantVersions.PRIMARY
    )
    # What the client may do with the key, comma-separated (kmsportal.crypto.operations.
    # OPERATIONS). The default is what every grant meant before issue 17: fetch the key.
    operations = models.CharField(max_length=200, default="fetch")
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "key"],
                condition=models.Q(withdrawn_at__isnull=True),
                name="vault_one_live_grant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.client.name} → {self.key.name}"

    @property
    def operation_list(self) -> list[str]:
        return [op for op in self.operations.split(",") if op]

    @property
    def releases_key_material(self) -> bool:
        """Whether this grant lets the client fetch the key itself. Only such grants follow
        the key's export policy; grants of operations that keep the key inside the KMS
        (encrypt, decrypt, sign, ...) are a one-person action (issue 17)."""
        return "fetch" in self.operation_list

    @property
    def is_live(self) -> bool:
        return self.withdrawn_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )


class Delivery(models.Model):
    """The ledger: which client received which key version, when, over which DH group."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="deliveries")
    key = models.ForeignKey(SymmetricKey, on_delete=models.PROTECT, related_name="deliveries")
    version = models.PositiveIntegerField()
    group = models.CharField(max_length=16)
    delivered_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-delivered_at"]
        default_permissions = ("view",)
        indexes = [
            models.Index(fields=["key", "version"], name="vault_delivery_key_version"),
            models.Index(fields=["client", "delivered_at"], name="vault_delivery_client_time"),
        ]

    def __str__(self) -> str:
        return f"{self.key.name} v{self.version} to {self.client.name}"


class ReplayNonce(models.Model):
    """Request nonces seen within the timestamp window. The unique index is the replay check:
    shared by every gunicorn worker and server, and it survives restarts."""

    nonce = models.CharField(max_length=32, unique=True)
    client_name = models.CharField(max_length=64)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return self.nonce


class ServerIdentity(models.Model):
    """The KMS's own `kms-server` certificate and its sealed private key.

    This key signs the server's half of every key exchange; clients check it against the
    root they pinned. `manage.py server_cert_renew` replaces it (the newest row is used).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    certificate = models.ForeignKey("pki.Certificate", on_delete=models.PROTECT, related_name="+")
    sealed_private_key = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"server identity {self.certificate_id}"

    @property
    def aad(self) -> bytes:
        return f"vault.ServerIdentity:{self.id}:private-key".encode()


class Deployment(models.Model):
    """This deployment's identity: a random id made once by `bootstrap` (one row, ever).

    It is written into the KMS's server certificate as the URI SAN
    ``urn:kmsportal:deployment:<id>``, which clients pin at enrollment next to the
    server-identity CA's key: two deployments that share a root cannot pass for each other.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return self.uri

    @property
    def uri(self) -> str:
        return f"urn:kmsportal:deployment:{self.id}"


class RefusalTally(models.Model):
    """Client API refusals not attributable to a verified client, counted per source address
    and minute. A flood of garbage costs one counter update each, never an audit event each
    (which would take the audit chain's lock); one ``api.requests_refused`` event per row
    reports the count once the minute is over (`vault.refusals.refusal_tallies_report`).
    """

    source = models.CharField(max_length=45)
    minute = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    codes = models.JSONField(default=dict)
    # What the refused requests named, when that helps an administrator and is no secret:
    # the pending enrollment a bad token proof aimed at ("client NAME, token id 1a2b3c4d").
    targets = models.JSONField(default=dict)
    reported = models.BooleanField(default=False, db_index=True)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["source", "minute"], name="vault_one_tally_per_minute")
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.minute:%Y-%m-%d %H:%M}: {self.count}"


class OperationSession(models.Model):
    """A session of the operations API: a key agreed by an authenticated ephemeral DH.

    The session key is stored sealed under the master keyring (AAD names the row), so every
    gunicorn worker and every server can serve the session's requests; `last_counter` is the
    highest request counter accepted (each request must exceed it: replay and reordering are
    refused by one conditional UPDATE, atomic on every node).
    """

    id = models.CharField(max_length=32, primary_key=True)  # 16 random bytes, hex
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    # The certificate the session was opened with: its revocation or expiry, or the client
    # enrolling a new one, ends the session at its next request.
    certificate = models.ForeignKey("pki.Certificate", on_delete=models.PROTECT, related_name="+")
    sealed_key = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    last_counter = models.BigIntegerField(default=0)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"operations session {self.id[:8]}"

    @property
    def aad(self) -> bytes:
        return f"vault.OperationSession:{self.id}:session-key".encode()


# --- two-person requests of the distribution (vault.approvals) ---------------------------


class GrantRequest(TwoPersonChange):
    """A fetch grant waiting for a second custodian (the key's export policy asks for it)."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="grant_requests")
    key = models.ForeignKey(SymmetricKey, on_delete=models.PROTECT, related_name="grant_requests")
    versions = models.CharField(
        max_length=8, choices=GrantVersions.choices, default=GrantVersions.PRIMARY
    )
    grant_expires_at = models.DateTimeField(null=True, blank=True)
    # What the grant will allow (always includes fetch: grants without it need no approval).
    operations = models.CharField(max_length=200, default="fetch")
    grant = models.ForeignKey(
        Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["client", "key"],
                condition=models.Q(status="pending"),
                name="vault_one_pending_grant_request",
            )
        ]

    def __str__(self) -> str:
        return f"grant {self.key.name} to {self.client.name} ({self.status})"


class ExportPolicyRequest(TwoPersonChange):
    """A weaker export policy for a key, waiting for a second custodian."""

    key = models.ForeignKey(
        SymmetricKey, on_delete=models.PROTECT, related_name="export_policy_requests"
    )
    from_policy = models.CharField(max_length=12, choices=ExportPolicy.choices)
    to_policy = models.CharField(max_length=12, choices=ExportPolicy.choices)

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(status="pending"),
                name="vault_one_pending_export_policy_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.key.name}: {self.from_policy} → {self.to_policy} ({self.status})"


class ReenrollmentRequest(TwoPersonChange):
    """A new enrollment token for a client that holds fetchable grants: whoever holds the
    token can enroll a key pair of their own and fetch those keys, so a second custodian
    approves it; the approver receives the token, once."""

    client = models.ForeignKey(
        Client, on_delete=models.PROTECT, related_name="reenrollment_requests"
    )

    class Meta:
        ordering = ["-requested_at"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["client"],
                condition=models.Q(status="pending"),
                name="vault_one_pending_reenrollment_request",
            )
        ]

    def __str__(self) -> str:
        return f"re-enroll {self.client.name} ({self.status})"
