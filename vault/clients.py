"""Client services: registration, enrollment, suspension and revocation; grants."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.actors import Actor, actor_name
from kmsportal.crypto import protocol
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.operations import grant_operations
from kmsportal.crypto.x509 import X509Error
from kmsportal.keyring.services import seal, unseal
from pki.errors import PkiError
from pki.selectors import certificate_by_id, certificate_chain_pems
from pki.services import certificate_issue_from_csr, certificate_revoke

from .events import VaultAction
from .models import (
    ENROLLMENT_TOKEN_TTL,
    Client,
    ClientState,
    ExportPolicy,
    Grant,
    GrantVersions,
    SymmetricKey,
)
from .refusals import DistributionError, FetchRefused, refusal_tally
from .server_identity import identity_ca, root_ca, server_credential, server_identity_pin

if TYPE_CHECKING:  # annotations only: vault reads pki through pki.selectors
    from pki.models import Certificate

CLIENT_PROFILE = "kms-client"


def _new_token(client: Client, *, actor: Actor) -> str:
    """A fresh one-time token for `client` (the caller saves the row). Stored: SHA-256 of the
    token id derived from it (the lookup) and the derived MAC key, sealed with AAD naming this
    row and that lookup; never the token, so a database reader cannot enroll with it."""
    token = protocol.new_enrollment_token()
    token_id, mac_key = protocol.enrollment_token_keys(token)
    lookup = protocol.enrollment_token_lookup(token_id)
    client.enrollment_token_hash = lookup
    client.enrollment_mac_key_sealed = seal(mac_key, aad=client.enrollment_mac_key_aad(lookup))
    now = timezone.now()
    client.enrollment_token_expires_at = now + ENROLLMENT_TOKEN_TTL
    client.enrollment_token_issued_to_name = actor_name(actor)
    client.enrollment_token_issued_at = now
    return token


@transaction.atomic
def client_create(*, actor: Actor, name: str, description: str = "") -> tuple[Client, str]:
    """Register a client service; returns it and its one-time enrollment token (shown once,
    stored only as a hash, valid 24 hours)."""
    from django.core.exceptions import ValidationError

    if name == "new":
        raise DistributionError("'new' is a reserved word and cannot name a client")
    client = Client(name=name, description=description, created_by_name=actor_name(actor))
    try:
        client.full_clean(exclude=["certificate", "enrollment_token_hash"])
    except ValidationError as exc:
        if Client.objects.filter(name=name).exists():
            raise DistributionError(f"a client named {name!r} already exists") from exc
        raise DistributionError(
            "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
        ) from exc
    token = _new_token(client, actor=actor)
    expires_at = client.enrollment_token_expires_at
    assert expires_at is not None  # _new_token sets it
    client.save(force_insert=True)
    audit_event_record(
        action=VaultAction.CLIENT_CREATED,
        actor=actor,
        target=client,
        details={
            "client": name,
            "token_expires_at": expires_at.isoformat(),
        },
    )
    return client, token


@transaction.atomic
def client_enrollment_token_renew(*, actor: Actor, client: Client) -> str:
    """A fresh one-time token (the old one stops working), e.g. to re-enroll a new key."""
    client = Client.objects.select_for_update().get(pk=client.pk)
    if client.state == ClientState.REVOKED:
        raise DistributionError(f"client {client.name} is revoked")
    token = _new_token(client, actor=actor)
    client.save()
    audit_event_record(action=VaultAction.CLIENT_TOKEN_ISSUED, actor=actor, target=client)
    return token


def client_enrollment_token_void(*, actor: Actor, client: Client, why: str) -> bool:
    """Void ``client``'s unused enrollment token (the caller holds the row lock and is in a
    transaction); audited with ``why``. Returns whether there was one to void."""
    if not client.has_unused_token:
        return False
    audit_event_record(
        action=VaultAction.CLIENT_TOKEN_VOIDED,
        actor=actor,
        target=client,
        details={
            "client": client.name,
            "issued_to": client.enrollment_token_issued_to_name,
            "issued_at": client.enrollment_token_issued_at.isoformat()
            if client.enrollment_token_issued_at
            else "",
            "why": why,
        },
    )
    client.enrollment_token_hash = ""
    client.enrollment_mac_key_sealed = b""
    client.enrollment_token_expires_at = None
    client.save(
        update_fields=[
            "enrollment_token_hash",
            "enrollment_mac_key_sealed",
            "enrollment_token_expires_at",
        ]
    )
    return True


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
        previous = certificate_by_id(pk=client.certificate_id)
        if not previous.is_revoked:
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
    return client, record, certificate_chain_pems(certificate=record), mac_key


def _enroll_refusal(client: Client, code: str, message: str, status: int) -> FetchRefused:
    """A refusal of an enrollment that names a pending token: it carries the client, so
    that `client_enroll_response` can say which pending enrollment was aimed at."""
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
    locked = Client.objects.select_for_update().get(pk=client.pk)
    if locked.state not in (ClientState.ACTIVE, ClientState.SUSPENDED):
        raise DistributionError(f"client {locked.name} is {locked.state}; it cannot be revoked")
    # Lock order: the certificate's revocation (CA row lock, CRL) comes before this service's
    # audit event, which takes the audit chain head: never hold the head while waiting.
    if locked.certificate_id:
        certificate = certificate_by_id(pk=locked.certificate_id)
        if not certificate.is_revoked:
            _revoke_certificate(actor=actor, certificate=certificate, reason=reason)
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
    certificate_revoke(actor=actor, certificate=certificate, reason=reason)


def grant_checks(
    *, client: Client, key: SymmetricKey, versions: str, expires_at: datetime | None
) -> None:
    """What a grant needs whoever makes it (one custodian, or a request a second approves):
    known versions, a future expiry, a live client, a key not destroyed, no grant already."""
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
    grant_checks(client=client, key=key, versions=versions, expires_at=expires_at)
    grant = Grant.objects.create(
        client=client,
        key=key,
        versions=versions,
        operations=operations,
        expires_at=expires_at,
        created_by_name=actor_name(actor),
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
    grant.withdrawn_by_name = actor_name(actor)
    grant.save()
    audit_event_record(
        action=VaultAction.GRANT_WITHDRAWN,
        actor=actor,
        target=grant.key,
        target_label=grant.key.name,
        details={"client": grant.client.name, "key": grant.key.name},
    )
    return grant


def client_enroll_response(*, body: Any) -> dict[str, Any]:
    """The enrollment endpoint's JSON answer to a parsed JSON body, or FetchRefused.

    A refusal is nobody's, so it is counted per source address and minute, never audited
    one event each: the token id travels in clear and is known to whoever saw the request
    (a bad token proof with it proves nothing), and an enrollment request carries no
    timestamp, so a genuine one refused (expired token, suspended client, bad CSR) can be
    replayed at will while the token stays pending. A refusal that names a pending token
    records its client and token id (no secret) in the tally, for an administrator to see
    which enrollment was aimed at. Only a pending enrollment that fails its integrity
    check (the server's fault, 500) is audited on its own."""
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
        credential = server_credential()
    except FetchRefused as exc:
        refused: Client | None = getattr(exc, "client", None)
        if refused is None:
            refusal_tally(code=exc.code)
            raise
        if exc.code != "integrity_error":
            refusal_tally(
                code=exc.code, target=f"client {refused.name}, token id {request.token_id[:8]}"
            )
            raise
        with transaction.atomic():
            audit_event_record(
                action=VaultAction.CLIENT_ENROLLMENT_REFUSED,
                outcome=Outcome.DENIED,
                anonymous=True,
                actor_name="enrollment",
                target=refused,
                target_label=refused.name,
                details={"code": exc.code, "reason": exc.message[:300], "client": refused.name},
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
