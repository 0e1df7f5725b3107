"""Key distribution: client services, enrollment, grants, and the key exchange itself.

The exchange (kmsportal.crypto.protocol) is a mutually authenticated ephemeral Diffie-Hellman
handshake in one round trip. The server checks, in this order, and refuses with a stable code,
an HTTP status, a clear message and an audit event at the first failure:

    malformed_request          the body does not parse as a fetch request
    untrusted_certificate      the certificate is not one our identity CA issued to a client
    certificate_expired        outside its validity period
    certificate_revoked        revoked (our database is the source of truth)
    unknown_client             no client holds this certificate
    client_suspended / client_revoked
    rate_limited               too many requests from this client in the window (429)
    bad_signature              the request signature does not verify with the certificate key
    stale_timestamp            request time outside ±5 minutes
    replayed_request           this nonce was seen before (database unique index: shared by
                               every worker and server, survives restarts)
    no_grant / grant_expired / version_not_granted
    key_not_distributable / version_not_distributable

Success records a `key.delivered` event and a ledger row (client, key, version, group); the
material itself is only ever in memory, encrypted to the client's ephemeral key.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils import timezone

from audit.context import request_meta
from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.counters import counter_add, counters
from kmsportal.crypto import protocol
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.operations import grant_operations
from kmsportal.crypto.server_identity import spki_sha256
from kmsportal.crypto.x509 import (
    CertificateLoadError,
    X509Error,
    build_csr,
    generate_private_key,
    load_certificate,
    parse_subject,
    private_key_from_der,
    private_key_to_der,
)
from kmsportal.keyring.backends import KeyBackendError
from kmsportal.keyring.services import seal, unseal, unseal_material
from pki.errors import PkiError
from pki.models import Certificate, CertificateAuthority, CertificateStatus, serial_to_hex
from pki.ocsp import certificate_status_staple
from pki.services import (
    certificate_authority_create,
    certificate_issue_from_csr,
    server_identity_certificate_issue,
)

from .events import VaultAction
from .lifecycle import KeyState, VersionState
from .models import (
    ENROLLMENT_TOKEN_TTL,
    Client,
    ClientState,
    Delivery,
    Deployment,
    ExportPolicy,
    Grant,
    GrantVersions,
    KeyVersion,
    RefusalTally,
    ReplayNonce,
    ServerIdentity,
    SymmetricKey,
)

Actor = User | None
CLIENT_PROFILE = "kms-client"
SERVER_PROFILE = "kms-server"


class DistributionError(Exception):
    """A management action on clients or grants that cannot be done as asked."""


class FetchRefused(Exception):
    """The client API refuses a request: stable `code`, HTTP `status`, clear message."""

    def __init__(self, code: str, message: str, status: int = 403, retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.outcome = Outcome.DENIED


def _actor_name(actor: Actor) -> str:
    return actor.get_username() if actor is not None else "system"


# --- identity CAs and the server credential ---------------------------------------------


def identity_ca() -> CertificateAuthority | None:
    return CertificateAuthority.objects.filter(name=settings.KMS_IDENTITY_CA_NAME).first()


def root_ca() -> CertificateAuthority | None:
    return CertificateAuthority.objects.filter(name=settings.KMS_ROOT_CA_NAME).first()


def server_identity_ca() -> CertificateAuthority | None:
    """The deployment's server-identity CA (at most one is marked, a database constraint)."""
    return CertificateAuthority.objects.filter(server_identity=True).first()


def deployment() -> Deployment | None:
    return Deployment.objects.order_by("created_at").first()


@dataclass(frozen=True)
class ServerIdentityPin:
    """What a client pins next to the root: the server-identity CA's key and the deployment."""

    ca_spki_sha256: str
    deployment: str

    def as_json(self) -> dict[str, str]:
        return {"ca_spki_sha256": self.ca_spki_sha256, "deployment": self.deployment}


def server_identity_pin() -> ServerIdentityPin | None:
    ca = server_identity_ca()
    current = deployment()
    if ca is None or current is None:
        return None
    return ServerIdentityPin(
        ca_spki_sha256=spki_sha256(load_certificate(bytes(ca.certificate_der))),
        deployment=current.uri,
    )


def _server_identity_prerequisites() -> tuple[list[str], CertificateAuthority, Deployment]:
    """Create, when missing, the server-identity CA (under the root) and the deployment id.

    Existing deployments (from before issue 13) get both the first time `bootstrap` or
    `server_cert_renew` runs; the KMS's certificate is then re-issued from the new CA."""
    done = []
    root = root_ca()
    if root is None:
        raise DistributionError("no root CA; run `manage.py bootstrap` first")
    ca = server_identity_ca()
    if ca is None:
        name = settings.KMS_SERVER_IDENTITY_CA_NAME
        if CertificateAuthority.objects.filter(name=name).exists():
            raise DistributionError(
                f"a CA named {name!r} exists but is not the server-identity CA; set "
                "KMS_SERVER_IDENTITY_CA_NAME to a free name"
            )
        ca = certificate_authority_create(
            actor=None,
            name=name,
            # Subjects are unique per portal (relying parties find issuers by name); a
            # random suffix keeps a re-created server-identity CA apart from a former one.
            subject=f"CN=kmsportal server identity CA {secrets.token_hex(4)},O=kmsportal",
            parent=root,
            key_type=settings.KMS_IDENTITY_CA_KEY_TYPE,
            server_identity=True,
        )
        done.append(f"created the server-identity CA {ca.name}")
    current = deployment()
    if current is None:
        with transaction.atomic():
            current = Deployment.objects.create()
            audit_event_record(
                action=VaultAction.DEPLOYMENT_CREATED,
                target=current,
                target_label=current.uri,
                details={"deployment": current.uri},
            )
        done.append(f"created the deployment identity {current.uri}")
    return done, ca, current


def distribution_bootstrap() -> list[str]:
    """Create, when missing, the root CA, the client-identity CA under it, the server-identity
    CA, the deployment identity and the KMS's own `kms-server` certificate (re-issued when the
    current one is not from the server-identity CA or does not name the deployment).
    Idempotent; returns what it did, for `bootstrap` to print."""
    done = []
    root = root_ca()
    key_type = settings.KMS_IDENTITY_CA_KEY_TYPE
    if root is None:
        root = certificate_authority_create(
            actor=None,
            name=settings.KMS_ROOT_CA_NAME,
            subject="CN=kmsportal root CA,O=kmsportal",
            key_type=key_type,
        )
        done.append(f"created root CA {root.name}")
    if identity_ca() is None:
        ca = certificate_authority_create(
            actor=None,
            name=settings.KMS_IDENTITY_CA_NAME,
            subject="CN=kmsportal client identity CA,O=kmsportal",
            parent=root,
            key_type=key_type,
        )
        done.append(f"created client identity CA {ca.name}")
    created, server_ca, current = _server_identity_prerequisites()
    done.extend(created)
    newest = ServerIdentity.objects.select_related("certificate").first()
    if (
        newest is None
        or newest.certificate.ca_id != server_ca.pk
        or f"uri:{current.uri}" not in newest.certificate.san_list
    ):
        identity = server_identity_renew()
        done.append(f"issued the KMS server certificate (serial {identity.certificate.serial_hex})")
    return done


def _server_host() -> str:
    return settings.KMS_PUBLIC_URL.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


@transaction.atomic
def server_identity_renew() -> ServerIdentity:
    """Issue a fresh `kms-server` certificate (new sealed key) from the server-identity CA,
    naming this deployment; creates that CA and the deployment id first if missing."""
    _done, ca, current = _server_identity_prerequisites()
    host = _server_host()
    private_key = generate_private_key("ecp256")
    csr = build_csr(private_key=private_key, subject=parse_subject("CN=kmsportal key server"))
    host_san = f"ip:{host}" if host.replace(".", "").isdigit() else f"dns:{host}"
    record = server_identity_certificate_issue(
        ca=ca,
        csr_pem_or_der=csr,
        subject="CN=kmsportal key server,O=kmsportal",
        sans=[host_san, f"uri:{current.uri}"],
    )
    identity = ServerIdentity(certificate=record, sealed_private_key=b"")
    identity.sealed_private_key = seal(private_key_to_der(private_key), aad=identity.aad)
    del private_key
    identity.save(force_insert=True)
    audit_event_record(
        action=VaultAction.SERVER_CERTIFICATE_ISSUED,
        target=record,
        target_label=record.subject,
        details={
            "serial": record.serial_hex,
            "not_after": record.not_after.isoformat(),
            "ca": ca.name,
            "deployment": current.uri,
        },
    )
    _server_cache.clear()
    return identity


_server_lock = threading.Lock()
_server_cache: dict[str, Any] = {}


def _server_credential() -> tuple[Any, list[str]]:
    """(private key, chain PEMs leaf first) of the newest server identity, loaded once."""
    credential = _server_credential_of(ServerIdentity.objects.values_list("pk", flat=True).first())
    return credential.key, credential.chain


@dataclass(frozen=True)
class _ServerCredential:
    identity_id: uuid.UUID
    certificate_id: int
    key: Any
    chain: list[str]


def _server_credential_of(identity_id: uuid.UUID | None) -> _ServerCredential:
    """The credential of server identity `identity_id`, which the caller read as the newest
    (the key fetch does, in its one query). Loaded once per process: a renewal adds a newer
    row (rows never change in place), so the next fetch on every server loads that one."""
    if identity_id is None:
        raise FetchRefused("server_not_ready", "the key server has no certificate yet", 503)
    with _server_lock:
        cached = _server_cache.get("credential")
        if cached is None or cached.identity_id != identity_id:
            identity = ServerIdentity.objects.select_related("certificate__ca").get(pk=identity_id)
            key = private_key_from_der(unseal(bytes(identity.sealed_private_key), aad=identity.aad))
            chain = [identity.certificate.certificate_pem]
            ca = identity.certificate.ca
            while ca is not None:
                chain.append(ca.certificate_pem)
                ca = ca.parent
            cached = _ServerCredential(identity.pk, identity.certificate_id, key, chain)
            _server_cache["credential"] = cached
        return cached


def _server_status(certificate_id: int) -> bytes:
    """The stapled status of the KMS's own certificate: a signed OCSP response, kept in
    Django's cache (Redis when several servers run, so every worker and node shares one) and
    renewed every KMS_SERVER_STATUS_REFRESH_SECONDS, well inside the 10 minutes clients
    accept by default. A revocation of the server certificate reaches every client within
    refresh + their maximum age; no fetch ever costs a CRL download or a signature beyond
    the one renewal per period."""
    name = f"kms:server-status:{certificate_id}"
    der = cache.get(name)
    if der is None:
        try:
            der = certificate_status_staple(certificate=Certificate.objects.get(pk=certificate_id))
        except PkiError as exc:
            raise FetchRefused(
                "server_not_ready", "the key server cannot state its certificate's status", 503
            ) from exc
        cache.set(name, der, timeout=settings.KMS_SERVER_STATUS_REFRESH_SECONDS)
    return der


# --- clients and grants -------------------------------------------------------------------


def _new_token(client: Client) -> str:
    """A fresh one-time token for `client` (the caller saves the row). Stored: SHA-256 of the
    token id derived from it (the lookup) and the derived MAC key, sealed with AAD naming this
    row and that lookup; never the token, so a database reader cannot enroll with it."""
    token = protocol.new_enrollment_token()
    token_id, mac_key = protocol.enrollment_token_keys(token)
    lookup = protocol.enrollment_token_lookup(token_id)
    client.enrollment_token_hash = lookup
    client.enrollment_mac_key_sealed = seal(mac_key, aad=client.enrollment_mac_key_aad(lookup))
    client.enrollment_token_expires_at = timezone.now() + ENROLLMENT_TOKEN_TTL
    return token


@transaction.atomic
def client_create(*, actor: Actor, name: str, description: str = "") -> tuple[Client, str]:
    """Register a client service; returns it and its one-time enrollment token (shown once,
    stored only as a hash, valid 24 hours)."""
    from django.core.exceptions import ValidationError

    if name == "new":
        raise DistributionError("'new' is a reserved word and cannot name a client")
    client = Client(name=name, description=description, created_by_name=_actor_name(actor))
    try:
        client.full_clean(exclude=["certificate", "enrollment_token_hash"])
    except ValidationError as exc:
        if Client.objects.filter(name=name).exists():
            raise DistributionError(f"a client named {name!r} already exists") from exc
        raise DistributionError(
            "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
        ) from exc
    token = _new_token(client)
    client.save(force_insert=True)
    audit_event_record(
        action=VaultAction.CLIENT_CREATED,
        actor=actor,
        target=client,
        details={
            "client": name,
            "token_expires_at": client.enrollment_token_expires_at.isoformat(),
        },
    )
    return client, token


@transaction.atomic
def client_enrollment_token_renew(*, actor: Actor, client: Client) -> str:
    """A fresh one-time token (the old one stops working), e.g. to re-enroll a new key."""
    client = Client.objects.select_for_update().get(pk=client.pk)
    if client.state == ClientState.REVOKED:
        raise DistributionError(f"client {client.name} is revoked")
    token = _new_token(client)
    client.save()
    audit_event_record(action=VaultAction.CLIENT_TOKEN_ISSUED, actor=actor, target=client)
    return token


@transaction.atomic
def client_enroll(
    *, request: protocol.EnrollRequest
) -> tuple[Client, Certificate, list[str], bytes]:
    """Exchange a proven one-time token and a CSR for a `kms-client` certificate.

    The client generated its key itself; only the CSR travels, with a MAC under the token's
    key over it (the token itself never travels). The token works once: it is cleared in the
    same transaction that issues the certificate. On re-enrollment the superseded client
    certificate is revoked (reason superseded) in this same transaction, so CRL and OCSP say
    so. Returns the client, its certificate, the chain and the MAC key for the answer.
    """
    client = (
        Client.objects.select_for_update()
        .filter(enrollment_token_hash=protocol.enrollment_token_lookup(request.token_id))
        .exclude(enrollment_token_hash="")
        .first()
    )
    if client is None or not client.enrollment_mac_key_sealed:
        raise FetchRefused("invalid_token", "the enrollment token is unknown or already used", 401)
    try:
        mac_key = unseal(
            bytes(client.enrollment_mac_key_sealed),
            aad=client.enrollment_mac_key_aad(client.enrollment_token_hash),
        )
    except EnvelopeError as exc:
        raise _enroll_refusal(
            client, "integrity_error", "the pending enrollment failed its integrity check", 500
        ) from exc
    try:
        protocol.verify_enroll_request(request, mac_key)
    except protocol.ProtocolError as exc:
        raise _enroll_refusal(client, exc.code, exc.message, 401) from exc
    if (
        client.enrollment_token_expires_at is None
        or client.enrollment_token_expires_at <= timezone.now()
    ):
        raise _enroll_refusal(
            client, "expired_token", "the enrollment token has expired; ask for a new one", 401
        )
    if client.state != ClientState.ACTIVE:
        raise _enroll_refusal(
            client, f"client_{client.state}", f"client {client.name} is {client.state}", 403
        )
    ca = identity_ca()
    if ca is None:
        raise FetchRefused("server_not_ready", "no client identity CA is configured", 503)
    try:
        record = certificate_issue_from_csr(
            actor=None,
            ca=ca,
            csr_pem_or_der=request.csr_pem.encode("ascii"),
            profile=CLIENT_PROFILE,
            subject_override=f"CN={client.name},O=kmsportal clients",
            sans_override=[f"uri:urn:kmsportal:client:{client.name}"],
        )
    except (X509Error, PkiError) as exc:
        raise _enroll_refusal(client, "bad_csr", str(exc), 400) from exc
    superseded = None
    if client.certificate_id is not None:
        previous = Certificate.objects.get(pk=client.certificate_id)
        if previous.status != CertificateStatus.REVOKED:
            # Lock order as in client_revoke: the revocation (CA row, CRL) before this
            # service's audit event takes the chain head.
            _revoke_certificate(actor=None, certificate=previous, reason="superseded")
            superseded = previous.serial_hex
    client.certificate = record
    client.enrollment_token_hash = ""
    client.enrollment_mac_key_sealed = b""
    client.enrollment_token_expires_at = None
    client.enrolled_at = timezone.now()
    client.save()
    audit_event_record(
        action=VaultAction.CLIENT_ENROLLED,
        actor=client,
        actor_name=client.name,
        target=client,
        details={
            "serial": record.serial_hex,
            "not_after": record.not_after.isoformat(),
            "superseded": superseded,
        },
    )
    chain = [record.certificate_pem]
    parent = record.ca
    while parent is not None:
        chain.append(parent.certificate_pem)
        parent = parent.parent
    return client, record, chain, mac_key


def _enroll_refusal(client: Client, code: str, message: str, status: int) -> FetchRefused:
    """A refusal of an enrollment that names a pending token: attributable, so audited in
    the client's name (an unknown token is not: it is counted per source instead)."""
    refusal = FetchRefused(code, message, status)
    refusal.client = client  # type: ignore[attr-defined]
    return refusal


def _client_transition(
    *,
    actor: Actor,
    client: Client,
    to: ClientState,
    allowed: tuple[ClientState, ...],
    event: VaultAction,
    details: dict[str, Any] | None = None,
    revocation_reason: str = "",
) -> Client:
    client = Client.objects.select_for_update().get(pk=client.pk)
    if client.state not in allowed:
        raise DistributionError(f"client {client.name} is {client.state}; it cannot become {to}")
    client.state = to
    if to == ClientState.REVOKED:
        client.revoked_at = timezone.now()
        client.revocation_reason = revocation_reason
    client.save()
    audit_event_record(action=event, actor=actor, target=client, details=details or {})
    return client


@transaction.atomic
def client_suspend(*, actor: Actor, client: Client) -> Client:
    return _client_transition(
        actor=actor,
        client=client,
        to=ClientState.SUSPENDED,
        allowed=(ClientState.ACTIVE,),
        event=VaultAction.CLIENT_SUSPENDED,
    )


@transaction.atomic
def client_resume(*, actor: Actor, client: Client) -> Client:
    return _client_transition(
        actor=actor,
        client=client,
        to=ClientState.ACTIVE,
        allowed=(ClientState.SUSPENDED,),
        event=VaultAction.CLIENT_RESUMED,
    )


CLIENT_REVOCATION_REASONS = ("affiliationChanged", "keyCompromise", "cessationOfOperation")


@transaction.atomic
def client_revoke(*, actor: Actor, client: Client, reason: str) -> Client:
    """Revoke the client for good and, in the same transaction, its certificate."""
    if reason not in CLIENT_REVOCATION_REASONS:
        raise DistributionError(f"reason must be one of {', '.join(CLIENT_REVOCATION_REASONS)}")
    locked = (
        Client.objects.select_for_update(of=("self",))
        .select_related("certificate")
        .get(pk=client.pk)
    )
    if locked.state not in (ClientState.ACTIVE, ClientState.SUSPENDED):
        raise DistributionError(f"client {locked.name} is {locked.state}; it cannot be revoked")
    # Lock order: the certificate's revocation (CA row lock, CRL) comes before this service's
    # audit event, which takes the audit chain head: never hold the head while waiting.
    if locked.certificate_id and locked.certificate.status != CertificateStatus.REVOKED:
        _revoke_certificate(actor=actor, certificate=locked.certificate, reason=reason)
    return _client_transition(
        actor=actor,
        client=locked,
        to=ClientState.REVOKED,
        allowed=(ClientState.ACTIVE, ClientState.SUSPENDED),
        event=VaultAction.CLIENT_REVOKED,
        details={"reason": reason},
        revocation_reason=reason,
    )


def _revoke_certificate(*, actor: Actor, certificate: Certificate, reason: str) -> None:
    """Through the PKI's revocation service: it also republishes the CA's CRL."""
    from pki.services import certificate_revoke

    certificate_revoke(actor=actor, certificate=certificate, reason=reason)


@transaction.atomic
def grant_create(
    *,
    actor: Actor,
    client: Client,
    key: SymmetricKey,
    versions: str = GrantVersions.PRIMARY,
    expires_at: datetime | None = None,
    operations: str | list[str] = "fetch",
) -> Grant:
    """Allow `client` to fetch `key` (the primary version only, or every decrypt-capable one),
    or to use it through the operations API for `operations` (issue 17)."""
    try:
        operations = grant_operations(key.key_type, operations)
    except ValueError as exc:
        raise DistributionError(str(exc)) from None
    if "fetch" in operations.split(",") and key.export_policy == ExportPolicy.NEVER:
        raise DistributionError(
            f"key {key.name}'s export policy is 'never': it can be used only through the "
            "operations API, never fetched"
        )
    if versions not in GrantVersions.values:
        raise DistributionError(f"versions must be one of {', '.join(GrantVersions.values)}")
    if expires_at is not None and expires_at <= timezone.now():
        raise DistributionError("the grant's expiry must be in the future")
    if client.state == ClientState.REVOKED:
        raise DistributionError(f"client {client.name} is revoked")
    if key.is_destroyed:
        raise DistributionError(f"key {key.name} is destroyed")
    if Grant.objects.filter(client=client, key=key, withdrawn_at__isnull=True).exists():
        raise DistributionError(
            f"{client.name} already has a grant for {key.name}; withdraw it first"
        )
    grant = Grant.objects.create(
        client=client,
        key=key,
        versions=versions,
        operations=operations,
        expires_at=expires_at,
        created_by_name=_actor_name(actor),
    )
    audit_event_record(
        action=VaultAction.GRANT_CREATED,
        actor=actor,
        target=key,
        target_label=key.name,
        details={
            "client": client.name,
            "key": key.name,
            "versions": versions,
            "operations": operations,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return grant


@transaction.atomic
def grant_withdraw(*, actor: Actor, grant: Grant) -> Grant:
    grant = Grant.objects.select_for_update().select_related("client", "key").get(pk=grant.pk)
    if grant.withdrawn_at is not None:
        raise DistributionError("this grant was already withdrawn")
    grant.withdrawn_at = timezone.now()
    grant.withdrawn_by_name = _actor_name(actor)
    grant.save()
    audit_event_record(
        action=VaultAction.GRANT_WITHDRAWN,
        actor=actor,
        target=grant.key,
        target_label=grant.key.name,
        details={"client": grant.client.name, "key": grant.key.name},
    )
    return grant


# --- the exchange -----------------------------------------------------------------------
#
# The fetch is the KMS's hot path (issue 9). What it costs besides the cryptography:
# * Reads: three statements (the presented certificate with its CA and client; on PostgreSQL
#   the key row lock; the grant, key, version and server identity), written once below as
#   SQL and run on the cursor: the ORM's per-call compilation cost several times the query.
# * Writes: the nonce, the delivery and the audit event in one transaction, so one commit
#   (one fsync) per fetch.
# * Per-process caches, for parsing and verifying only: the presented certificate's parse
#   and CA signature check, and the loaded server credential. Whatever the database decides
#   (which CA, revocation, client state, grant, key and version states) is read again on
#   every request, so a revocation or suspension stops the very next request on every server.


@dataclass
class _Context:
    client: Client | None = None
    key_name: str = ""
    subject: str = ""
    # The request's nonce once inserted: if the request is refused later, the rollback
    # removes the row and the refusal's own transaction inserts it again (still spent).
    nonce: str = ""
    # True once the request's signature verified with a certificate this KMS issued to a
    # client: from then on a refusal is that client's and is audited in its name. Before,
    # anyone could have sent it (certificates are public): it is only counted per source.
    attributable: bool = False


def _refuse(
    context: _Context, code: str, message: str, status: int = 403, **extra: Any
) -> FetchRefused:
    """A refusal to raise; `key_fetch` audits it once every transaction has been left, so
    the record of a refused request survives the rollback of whatever that request began."""
    return FetchRefused(code, message, status, extra.get("retry_after"))


def _audit_refusal(context: _Context, refusal: FetchRefused) -> None:
    if not context.attributable:
        refusal_tally(code=refusal.code)
        return
    with transaction.atomic():
        _spend_nonce_again(context)
        audit_event_record(
            action=VaultAction.KEY_FETCH_REFUSED,
            outcome=refusal.outcome,
            actor=context.client,
            anonymous=context.client is None,
            actor_name=context.client.name
            if context.client
            else (context.subject or "unknown client"),
            target_type="vault.SymmetricKey",
            target_label=context.key_name[:255],
            details={
                "code": refusal.code,
                "reason": refusal.message[:300],
                "key": context.key_name[:100],
            },
        )


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _as_uuid(value: Any) -> uuid.UUID:
    """A UUID column as read from the cursor (32 hex digits on SQLite, UUID on PostgreSQL)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _as_datetime(value: Any) -> datetime | None:
    """A datetime column as read from the cursor: SQLite's holds UTC without an offset."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _insert(model: type[models.Model], **values: Any) -> None:
    """INSERT one row, each value adapted by its field as the ORM would (UUIDs, datetimes),
    without the ORM's per-call SQL compilation."""
    fields = [model._meta.get_field(name) for name in values]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
    ]
    placeholders = ", ".join(["%s"] * len(params))
    sql = f"INSERT INTO {_table(model)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@dataclass
class _PresentedCertificate:
    """A client certificate as parsed from a request, and what the checks need of it."""

    certificate: x509.Certificate
    der: bytes
    serial_hex: str
    subject: str
    # The DER of the CA certificate whose signature on `der` has verified (a pure function
    # of the two byte strings, so it need not be checked again for the same CA certificate),
    # and the public key, loaded once that is known.
    verified_by: bytes | None = None
    public_key: Any = None


_PRESENTED_CACHE_SIZE = 1024
_presented_lock = threading.Lock()
# PEM text -> its parse. Only certificates the database knows as a client certificate of
# the identity CA get in, so unknown certificates cannot push known ones out.
_presented: OrderedDict[str, _PresentedCertificate] = OrderedDict()


def _presented_certificate(context: _Context, pem: str) -> _PresentedCertificate:
    with _presented_lock:
        cached = _presented.get(pem)
        if cached is not None:
            _presented.move_to_end(pem)
            return cached
    try:
        certificate = load_certificate(pem.encode())
    except (CertificateLoadError, ValueError) as exc:
        raise _refuse(
            context, "untrusted_certificate", f"the client certificate does not parse: {exc}"
        ) from exc
    return _PresentedCertificate(
        certificate=certificate,
        der=certificate.public_bytes(Encoding.DER),
        serial_hex=serial_to_hex(certificate.serial_number),
        subject=certificate.subject.rfc4514_string()[:150],
    )


def _remember_presented(pem: str, presented: _PresentedCertificate) -> None:
    with _presented_lock:
        _presented[pem] = presented
        _presented.move_to_end(pem)
        while len(_presented) > _PRESENTED_CACHE_SIZE:
            _presented.popitem(last=False)


@functools.cache
def _client_certificate_sql(vendor: str) -> str:
    # The certificate row (serial, identity CA by name, kms-client profile), its CA's
    # certificate, and the client holding it (if any), like `Client.objects.filter(
    # certificate=record).first()` (ordered by name).
    return (
        'SELECT c."status", c."certificate_der", a."certificate_der", '  # noqa: S608 (no input)
        'k."id", k."name", k."state" '
        f"FROM {_table(Certificate)} c "
        f'JOIN {_table(CertificateAuthority)} a ON a."id" = c."ca_id" '
        f'LEFT JOIN {_table(Client)} k ON k."certificate_id" = c."id" '
        'WHERE c."serial_hex" = %s AND a."name" = %s AND c."profile" = %s '
        'ORDER BY k."name" LIMIT 1'
    )


_issuers_lock = threading.Lock()
_issuers: dict[bytes, x509.Certificate] = {}  # CA certificate DER -> parsed (few CAs)


def _issuer(der: bytes) -> x509.Certificate:
    with _issuers_lock:
        issuer = _issuers.get(der)
        if issuer is None:
            if len(_issuers) >= 16:
                _issuers.clear()
            issuer = _issuers[der] = load_certificate(der)
        return issuer


def _certificate_lookup(
    context: _Context, pem: str
) -> tuple[tuple[Any, ...], _PresentedCertificate]:
    """The presented certificate must be a client certificate of our identity CA, and its
    CA signature must verify. Refusals here are not attributable (anyone can present any
    certificate)."""
    presented = _presented_certificate(context, pem)
    context.subject = presented.subject
    row = _fetch_one(
        _client_certificate_sql(connection.vendor),
        [presented.serial_hex, settings.KMS_IDENTITY_CA_NAME, CLIENT_PROFILE],
    )
    if row is None or bytes(row[1]) != presented.der:
        raise _refuse(
            context,
            "untrusted_certificate",
            "the certificate was not issued to a client by this KMS's identity CA",
        )
    issuer_der = bytes(row[2])
    if presented.verified_by != issuer_der:
        try:
            presented.certificate.verify_directly_issued_by(_issuer(issuer_der))
        except Exception as exc:  # ValueError, TypeError, InvalidSignature, a bad CA row
            raise _refuse(
                context, "untrusted_certificate", "the certificate's signature does not verify"
            ) from exc
        presented.public_key = presented.certificate.public_key()
        presented.verified_by = issuer_der
    _remember_presented(pem, presented)
    return row, presented


def _certificate_status(
    context: _Context, row: tuple[Any, ...], presented: _PresentedCertificate, now: datetime
) -> Client:
    """After the request's signature verified: validity, revocation and the client's state
    (attributable refusals, audited in the client's name)."""
    status, _der, _issuer_der, client_id, client_name, client_state = row
    if client_id is not None:
        context.client = Client.from_db(
            connection.alias,
            ["id", "name", "state"],
            [_as_uuid(client_id), client_name, client_state],
        )
    certificate = presented.certificate
    if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
        raise _refuse(
            context,
            "certificate_expired",
            f"the client certificate is valid only from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d}",
            401,
        )
    if status == CertificateStatus.REVOKED:
        raise _refuse(context, "certificate_revoked", "the client certificate is revoked", 401)
    client = context.client
    if client is None:
        raise _refuse(context, "unknown_client", "no client holds this certificate (re-enrolled?)")
    if client.state != ClientState.ACTIVE:
        raise _refuse(context, f"client_{client.state}", f"client {client.name} is {client.state}")
    return client


def _rate_limit(context: _Context, client: Client) -> None:
    """Fixed window per client, in the shared counters (database, or Redis when set).
    Charged only for requests whose signature verified: a client's certificate is public,
    so anything else would let anyone spend its budget."""
    limit = settings.KMS_CLIENT_RATE_LIMIT
    if not limit:
        return
    window = settings.KMS_CLIENT_RATE_WINDOW_SECONDS
    now = timezone.now().timestamp()
    bucket = int(now // window)
    name = f"kms:rate:{client.pk}:{bucket}"
    # kmsportal.counters: every worker and node shares the count (database or Redis).
    count = counter_add(counters(), name, timeout=window * 2)
    if count > limit:
        retry = int(window - (now % window)) + 1
        raise _refuse(
            context,
            "rate_limited",
            f"more than {limit} requests in {window} s; retry in {retry} s",
            429,
            retry_after=retry,
        )


def _consume_nonce(context: _Context, nonce: bytes, client: Client) -> None:
    """The replay check, inside the fetch's transaction: a second insert of the nonce fails
    on the unique index (on PostgreSQL it waits for the first transaction to end).

    A refused request still spends its nonce: the rollback removes the row and the refusal's
    transaction inserts it again (`_spend_nonce_again`). In the moment between the two, a
    replay of a refused request can get its row in and is then judged like the original
    (same client, same signed request, state read again); what it could obtain is encrypted
    to the original client's ephemeral key anyway.
    """
    try:
        _insert(ReplayNonce, nonce=nonce.hex(), client_name=client.name, seen_at=timezone.now())
    except IntegrityError:
        # Nothing more runs in this transaction: raising leaves it (rolled back).
        raise _refuse(
            context, "replayed_request", "this request was already received (replay)", 409
        ) from None
    context.nonce = nonce.hex()
    # Nonces older than the timestamp window can never be replayed successfully anyway.
    if secrets.randbelow(100) == 0:
        cutoff = timezone.now() - 2 * protocol.MAX_CLOCK_SKEW - timedelta(minutes=1)
        ReplayNonce.objects.filter(seen_at__lt=cutoff).delete()


def _spend_nonce_again(context: _Context) -> None:
    """Insert the nonce of a refused request again after its rollback (see `_consume_nonce`);
    in the caller's transaction. A concurrent replay that inserted it first spent it too."""
    if not context.nonce or context.client is None:
        return
    try:
        with transaction.atomic():
            _insert(
                ReplayNonce,
                nonce=context.nonce,
                client_name=context.client.name,
                seen_at=timezone.now(),
            )
    except IntegrityError:
        pass


@functools.cache
def _key_lock_sql(vendor: str) -> str:
    return f'SELECT "id" FROM {_table(SymmetricKey)} WHERE "name" = %s FOR UPDATE'  # noqa: S608


@functools.cache
def _delivery_sql(vendor: str, by_number: bool) -> str:
    # The live grant of the client for the key (at most one: vault_one_live_grant), the key,
    # the version asked for (or the primary) if it exists, and the newest server identity.
    version = 'v."number" = %s' if by_number else 'v."is_primary" = %s'
    return (
        'SELECT g."versions", g."expires_at", k."id", k."name", k."state", '  # noqa: S608
        'k."min_decryption_version", v."number", v."state", v."is_primary", '
        'v."sealed_material", '
        f'(SELECT s."id" FROM {_table(ServerIdentity)} s ORDER BY s."created_at" DESC LIMIT 1), '
        'g."operations" '
        f"FROM {_table(Grant)} g "
        f'JOIN {_table(SymmetricKey)} k ON k."id" = g."key_id" '
        f'LEFT JOIN {_table(KeyVersion)} v ON v."key_id" = k."id" AND {version} '
        'WHERE g."client_id" = %s AND g."withdrawn_at" IS NULL AND k."name" = %s'
    )


@dataclass
class _Delivery:
    key: SymmetricKey
    version: KeyVersion
    server_identity: uuid.UUID | None


def _version_to_deliver(
    context: _Context, client: Client, request: protocol.FetchRequest
) -> _Delivery:
    """What to deliver, every authorisation check made; the caller holds the key row lock
    (PostgreSQL) or the database's write lock (SQLite), so this reads committed state."""
    now = timezone.now()
    by_number = request.version is not None
    row = _fetch_one(
        _delivery_sql(connection.vendor, by_number),
        [
            request.version if by_number else True,
            Client._meta.pk.get_db_prep_value(client.pk, connection),
            request.key_name,
        ],
    )
    if row is None:
        # Same answer whether the key exists or not: a client learns nothing by guessing.
        raise _refuse(
            context, "no_grant", f"client {client.name} has no grant for key {request.key_name!r}"
        )
    (
        grant_versions,
        expires_at,
        key_id,
        key_name,
        key_state,
        min_decryption_version,
        number,
        version_state,
        is_primary,
        sealed_material,
        server_identity,
        operations,
    ) = row
    if "fetch" not in operations.split(","):
        # An operations-only grant (issue 17): the key is used inside the KMS, never released.
        raise _refuse(
            context,
            "operation_not_granted",
            f"client {client.name} may use key {request.key_name!r} only through the "
            f"operations API ({operations}), not fetch it",
        )
    key = SymmetricKey.from_db(
        connection.alias,
        ["id", "name", "state", "min_decryption_version"],
        [_as_uuid(key_id), key_name, key_state, min_decryption_version],
    )
    expires_at = _as_datetime(expires_at)
    if expires_at is not None and expires_at <= now:
        raise _refuse(
            context,
            "grant_expired",
            f"the grant for {key.name} expired at {expires_at:%Y-%m-%d %H:%M} UTC",
        )
    if key.state == KeyState.ACTIVE:
        pass
    elif key.state == KeyState.DEACTIVATED and by_number:
        pass  # decrypt-only keys deliver explicitly requested versions
    else:
        raise _refuse(
            context, "key_not_distributable", f"key {key.name} is {key.get_state_display()}", 409
        )
    version = (
        None
        if number is None
        else KeyVersion.from_db(
            connection.alias,
            ["key_id", "number", "sealed_material", "state", "is_primary"],
            [key.pk, number, sealed_material, version_state, bool(is_primary)],
        )
    )
    identity = None if server_identity is None else _as_uuid(server_identity)
    if not by_number:
        if version is None or version.state != VersionState.ACTIVE:
            raise _refuse(
                context,
                "key_not_distributable",
                f"key {key.name} has no usable primary version",
                409,
            )
        return _Delivery(key, version, identity)
    if version is None:
        raise _refuse(
            context,
            "version_not_distributable",
            f"key {key.name} has no version {request.version}",
            404,
        )
    if grant_versions == GrantVersions.PRIMARY and not version.is_primary:
        raise _refuse(
            context,
            "version_not_granted",
            f"the grant for {key.name} covers the primary version only",
        )
    if version.state not in (VersionState.ACTIVE, VersionState.DEACTIVATED):
        raise _refuse(
            context,
            "version_not_distributable",
            f"version {version.number} of {key.name} is {version.get_state_display()}",
            409,
        )
    if version.number < key.min_decryption_version:
        raise _refuse(
            context,
            "version_not_distributable",
            f"version {version.number} of {key.name} is below the minimum decryption "
            f"version {key.min_decryption_version}",
            409,
        )
    return _Delivery(key, version, identity)


def key_fetch(*, body: Any, request_id: str = "") -> dict[str, Any]:
    """Answer one fetch request (JSON already parsed) or raise FetchRefused (audited)."""
    context = _Context()
    try:
        return _key_fetch(body=body, request_id=request_id, context=context)
    except FetchRefused as refusal:
        _audit_refusal(context, refusal)
        raise
    except Exception:
        # Not a refusal (a bug, the database going away): still spend the nonce if possible.
        with contextlib.suppress(DatabaseError), transaction.atomic():
            _spend_nonce_again(context)
        raise


def _key_fetch(*, body: Any, request_id: str, context: _Context) -> dict[str, Any]:
    now = timezone.now()
    if isinstance(body, dict):
        context.key_name = str(body.get("key_name", ""))[:100]
    try:
        request, signature = protocol.FetchRequest.from_json(body)
    except protocol.ProtocolError as exc:
        raise _refuse(context, exc.code, exc.message, 400) from exc
    row, presented = _certificate_lookup(context, request.client_certificate_pem)
    try:
        protocol.verify_fetch_request_signature(request, signature, presented.public_key)
    except protocol.ProtocolError as exc:
        status = 401 if exc.code == "bad_signature" else 400
        raise _refuse(context, exc.code, exc.message, status) from exc
    # From here on the request is authentic: its refusals are the client's, and it is
    # charged to the client's rate budget (never before, see `_rate_limit`).
    context.attributable = True
    client = _certificate_status(context, row, presented, now)
    _rate_limit(context, client)
    try:
        protocol.check_timestamp(request.timestamp, now=now)
    except protocol.ProtocolError as exc:
        raise _refuse(context, exc.code, exc.message, 401) from exc
    # One transaction, one commit: the nonce, the delivery ledger row and the audit event
    # (a refusal rolls it back; `key_fetch` then records the refusal and the nonce).
    with transaction.atomic():
        _consume_nonce(context, request.client_nonce, client)
        if connection.features.has_select_for_update:
            # Lock the key row: a compromise or suspension committed before this point is
            # seen by the next statement; one committing after waits until this delivery is
            # recorded. (SQLite: this transaction began with the database's write lock.)
            _fetch_one(_key_lock_sql(connection.vendor), [request.key_name])
        context.key_name = request.key_name
        delivery = _version_to_deliver(context, client, request)
        key, version = delivery.key, delivery.version
        try:
            material = unseal_material(bytes(version.sealed_material), aad=version.aad)
        except (EnvelopeError, KeyBackendError) as exc:
            refusal = FetchRefused(
                "integrity_error",
                f"key {key.name} version {version.number} failed its integrity check",
                500,
            )
            refusal.outcome = Outcome.ERROR
            raise refusal from exc
        credential = _server_credential_of(delivery.server_identity)
        try:
            response = protocol.build_fetch_response(
                request=request,
                request_signature=signature,
                key_name=key.name,
                version=version.number,
                client_name=client.name,
                key_material=material,
                server_private_key=credential.key,
                server_chain_pems=credential.chain,
                server_status=_server_status(credential.certificate_id),
            )
        except protocol.ProtocolError as exc:
            # A degenerate ephemeral public value (low-order X25519 point, ffdhe3072 value
            # out of range or outside the prime-order subgroup): the client's mistake or
            # attack, answered as such and audited in its name.
            raise _refuse(context, exc.code, exc.message, 400) from exc
        finally:
            del material
        _insert(
            Delivery,
            client=client.pk,
            key=key.pk,
            version=version.number,
            group=request.group,
            delivered_at=timezone.now(),
            request_id=request_id,
        )
        audit_event_record(
            action=VaultAction.KEY_DELIVERED,
            actor=client,
            target=key,
            target_label=key.name,
            details={
                "key": key.name,
                "version": version.number,
                "group": request.group,
                "client": client.name,
            },
        )
    return response


def client_enroll_response(*, body: Any) -> dict[str, Any]:
    """The enrollment endpoint's JSON answer to a parsed JSON body, or FetchRefused.

    Refusals that name a pending token are audited in its client's name; the others (an
    unknown token id, a malformed or legacy request) are counted per source address."""
    try:
        request = protocol.parse_enroll_request(body)
    except protocol.ProtocolError as exc:
        refusal_tally(code=exc.code)
        raise FetchRefused(exc.code, exc.message, 400) from exc
    try:
        client, record, chain, mac_key = client_enroll(request=request)
        pin = server_identity_pin()
        if pin is None:
            raise FetchRefused("server_not_ready", "the KMS has no server identity yet", 503)
        credential = _server_credential()
    except FetchRefused as exc:
        client = getattr(exc, "client", None)
        if client is None:
            refusal_tally(code=exc.code)
            raise
        with transaction.atomic():
            audit_event_record(
                action=VaultAction.CLIENT_ENROLLMENT_REFUSED,
                outcome=Outcome.DENIED,
                anonymous=True,
                actor_name="enrollment",
                target=client,
                target_label=client.name,
                details={"code": exc.code, "reason": exc.message[:300], "client": client.name},
            )
        raise
    server_key, server_chain = credential
    root = root_ca()
    return protocol.build_enroll_response(
        request=request,
        mac_key=mac_key,
        answer={
            "client": client.name,
            "certificate": record.certificate_pem,
            "chain": chain,
            "root_ca_certificate": root.certificate_pem if root else chain[-1],
            "not_after": record.not_after.isoformat(),
            "server_identity": pin.as_json(),
        },
        server_private_key=server_key,
        server_chain_pems=server_chain,
    )


# --- refusals nobody can be held to ---------------------------------------------------------


def _source_address() -> str:
    meta = request_meta()
    return (meta.source_ip if meta else "") or "unknown"


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def address_refusals_exceeded() -> int | None:
    """Seconds to wait if the current source address has had more than
    KMS_API_ADDRESS_REFUSAL_LIMIT unattributable refusals this minute (its requests are then
    answered 429 unread), else None. One read of the shared counters."""
    limit = settings.KMS_API_ADDRESS_REFUSAL_LIMIT
    if not limit:
        return None
    now = timezone.now()
    # In the shared counters (database, or Redis when set): every worker and node sees the
    # same count, so a flood is limited per address, not per address and worker.
    name = f"kms:refusals:{_source_address()[:45]}:{int(now.timestamp() // 60)}"
    count = counters().get(name) or 0
    if count < limit:
        return None
    return 60 - now.second


def refusal_tally(*, code: str) -> None:
    """Count one client API refusal that no verified client can be held to (malformed body,
    unknown certificate, bad signature, unknown token...), per source address and minute.

    One shared counter (for the per-address limit) and one row update, never
    an audit event each: a flood must not take the audit chain's lock per request. One
    ``api.requests_refused`` event per (source, minute) reports the count when the minute is
    over (`refusal_tallies_report`, run from here once a minute and by ``manage.py
    report_refusals``)."""
    source = _source_address()[:45]
    now = timezone.now()
    counter_add(counters(), f"kms:refusals:{source}:{int(now.timestamp() // 60)}", timeout=120)
    minute = _minute(now)
    with contextlib.suppress(DatabaseError), transaction.atomic():
        tally, _created = RefusalTally.objects.select_for_update().get_or_create(
            source=source, minute=minute
        )
        codes = dict(tally.codes)
        if code in codes or len(codes) < 20:
            codes[code[:40]] = codes.get(code[:40], 0) + 1
        RefusalTally.objects.filter(pk=tally.pk).update(count=models.F("count") + 1, codes=codes)
    if cache.add(f"kms:refusals-report:{int(now.timestamp() // 60)}", 1, timeout=120):
        with contextlib.suppress(DatabaseError):
            refusal_tallies_report()


def refusal_tallies_report(*, now: datetime | None = None) -> int:
    """One ``api.requests_refused`` audit event per (source, minute) tally of a minute that is
    over and not yet reported; returns how many. Safe to run from several places at once:
    each tally is claimed under a row lock and marked reported with its event."""
    cutoff = _minute(now or timezone.now())
    reported = 0
    pending = list(
        RefusalTally.objects.filter(reported=False, minute__lt=cutoff).values_list("pk", flat=True)
    )
    for pk in pending:
        with transaction.atomic():
            tally = RefusalTally.objects.select_for_update().filter(pk=pk, reported=False).first()
            if tally is None:
                continue
            tally.reported = True
            tally.save(update_fields=["reported"])
            audit_event_record(
                action=VaultAction.API_REQUESTS_REFUSED,
                outcome=Outcome.DENIED,
                anonymous=True,
                actor_name=f"unverified requests from {tally.source}",
                target_type="vault.RefusalTally",
                target_id=str(tally.pk),
                target_label=f"{tally.source} {tally.minute:%Y-%m-%d %H:%M} UTC",
                details={
                    "source": tally.source,
                    "minute": tally.minute.isoformat(),
                    "count": tally.count,
                    "codes": tally.codes,
                },
            )
            reported += 1
    return reported
