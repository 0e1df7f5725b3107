"""The key exchange: one authenticated fetch request, checked and answered.

The exchange (kmsportal.crypto.protocol) is a mutually authenticated ephemeral Diffie-Hellman
handshake in one round trip. The server checks, in this order, and refuses with a stable code,
an HTTP status and a clear message at the first failure:

    malformed_request          the body does not parse as a fetch request
    untrusted_certificate      the certificate is not one our identity CA issued to a client
    bad_signature              the request signature does not verify with the certificate key
    stale_timestamp            request time outside ±5 minutes
    replayed_request           this nonce was seen before (database unique index: shared by
                               every worker and server, survives restarts)
    certificate_expired        outside its validity period
    certificate_revoked        revoked (our database is the source of truth)
    unknown_client             no client holds this certificate
    client_suspended / client_revoked
    rate_limited               too many requests from this client in the window (429)
    no_grant / grant_expired / version_not_granted
    key_not_distributable / version_not_distributable
    bad_public_key             the ephemeral DH value is degenerate

The refusals down to replayed_request are nobody's: a client certificate is public and a
signed request seen on the wire can be sent again, so they are counted per source address
(`vault.refusals.refusal_tally`), never audited in the client's name nor charged to its
rate budget. From certificate_expired on, the request is authentic and new: its refusals
are audited in the client's name, and rate_limited counts only such requests.

Success records a `key.delivered` event and a ledger row (client, key, version, group); the
material itself is only ever in memory, encrypted to the client's ephemeral key.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.counters import counter_add, counters
from kmsportal.crypto import protocol
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.x509 import CertificateLoadError, load_certificate
from kmsportal.keyring.backends import KeyBackendError
from kmsportal.keyring.services import unseal_material
from pki.selectors import ClientCertificate, client_certificate_for_fetch

from .clients import CLIENT_PROFILE
from .events import VaultAction
from .lifecycle import KeyState, VersionState
from .models import (
    Client,
    ClientState,
    Delivery,
    GrantVersions,
    KeyVersion,
    ReplayNonce,
    SymmetricKey,
)
from .queries import (
    as_datetime,
    as_uuid,
    client_of_certificate,
    delivery_row,
    insert_row,
    key_row_lock,
)
from .refusals import FetchRefused, refusal_tally
from .server_identity import server_credential_of, server_status_staple

# --- the exchange -----------------------------------------------------------------------
#
# The fetch is the KMS's hot path (issue 9). What it costs besides the cryptography:
# * Reads: four statements (the presented certificate with its CA, through pki.selectors;
#   the client holding it; on PostgreSQL the key row lock; the grant, key, version and
#   server identity), written once as SQL (pki/queries.py, vault/queries.py) and run on the
#   cursor: the ORM's per-call compilation cost several times the query.
# * Writes: two commits per fetch. The nonce with the rate budget's charge (`request_admit`:
#   committed before anything can refuse the request in the client's name), then the
#   delivery with its audit event.
# * Per-process caches, for parsing and verifying only: the presented certificate's parse
#   and CA signature check, and the loaded server credential (secret: never shared). The
#   stapled status of the server certificate is in Django's cache, shared by every node. Whatever the database decides
#   (which CA, revocation, client state, grant, key and version states) is read again on
#   every request, so a revocation or suspension stops the very next request on every server.


@dataclass
class FetchContext:
    client: Client | None = None
    key_name: str = ""
    subject: str = ""
    # True once the request's signature verified with a certificate this KMS issued to a
    # client, its timestamp is fresh and its nonce new: from then on a refusal is that
    # client's and is audited in its name. Before, anyone could have sent it (certificates
    # are public, a request seen on the wire can be replayed): it is only counted per source.
    attributable: bool = False


def _refuse(
    context: FetchContext, code: str, message: str, status: int = 403, **extra: Any
) -> FetchRefused:
    """A refusal to raise; `key_fetch` audits it once every transaction has been left, so
    the record of a refused request survives the rollback of whatever that request began."""
    return FetchRefused(code, message, status, extra.get("retry_after"))


def _audit_refusal(context: FetchContext, refusal: FetchRefused) -> None:
    if not context.attributable:
        refusal_tally(code=refusal.code)
        return
    with transaction.atomic():
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


@dataclass
class _PresentedCertificate:
    """A client certificate as parsed from a request, and what the checks need of it."""

    certificate: x509.Certificate
    der: bytes
    serial_number: int
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
# Per process on purpose, like `_issuers` below: they hold parsed `cryptography` objects
# (which cannot be pickled into Django's cache) and are pure functions of the bytes they are
# keyed by, so they need no invalidation; whatever the database decides (revocation, client
# state, grants) is read on every request, never cached.
_presented: OrderedDict[str, _PresentedCertificate] = OrderedDict()


def _presented_certificate(context: FetchContext, pem: str) -> _PresentedCertificate:
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
        serial_number=certificate.serial_number,
        subject=certificate.subject.rfc4514_string()[:150],
    )


def _remember_presented(pem: str, presented: _PresentedCertificate) -> None:
    with _presented_lock:
        _presented[pem] = presented
        _presented.move_to_end(pem)
        while len(_presented) > _PRESENTED_CACHE_SIZE:
            _presented.popitem(last=False)


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


def certificate_lookup(
    context: FetchContext, pem: str
) -> tuple[ClientCertificate, _PresentedCertificate]:
    """The presented certificate must be a client certificate of our identity CA, and its
    CA signature must verify. Refusals here are not attributable (anyone can present any
    certificate)."""
    presented = _presented_certificate(context, pem)
    context.subject = presented.subject
    stored = client_certificate_for_fetch(
        serial_number=presented.serial_number,
        ca_name=settings.KMS_IDENTITY_CA_NAME,
        profile=CLIENT_PROFILE,
    )
    if stored is None or stored.der != presented.der:
        raise _refuse(
            context,
            "untrusted_certificate",
            "the certificate was not issued to a client by this KMS's identity CA",
        )
    if presented.verified_by != stored.ca_der:
        try:
            presented.certificate.verify_directly_issued_by(_issuer(stored.ca_der))
        except Exception as exc:  # ValueError, TypeError, InvalidSignature, a bad CA row
            raise _refuse(
                context, "untrusted_certificate", "the certificate's signature does not verify"
            ) from exc
        presented.public_key = presented.certificate.public_key()
        presented.verified_by = stored.ca_der
    _remember_presented(pem, presented)
    return stored, presented


def certificate_holder(context: FetchContext, stored: ClientCertificate) -> None:
    """The client holding the presented certificate, if any (`context.client`)."""
    holder = client_of_certificate(stored.pk)
    if holder is not None:
        context.client = Client.from_db(connection.alias, ["id", "name", "state"], list(holder))


def certificate_status(
    context: FetchContext,
    presented: _PresentedCertificate,
    stored: ClientCertificate,
    now: datetime,
) -> Client:
    """After the request proved authentic and fresh: validity, revocation and the client's
    state (attributable refusals, audited in the client's name). `certificate_holder` ran."""
    certificate = presented.certificate
    if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
        raise _refuse(
            context,
            "certificate_expired",
            f"the client certificate is valid only from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d}",
            401,
        )
    if stored.is_revoked:
        raise _refuse(context, "certificate_revoked", "the client certificate is revoked", 401)
    client = context.client
    if client is None:
        raise _refuse(context, "unknown_client", "no client holds this certificate (re-enrolled?)")
    if client.state != ClientState.ACTIVE:
        raise _refuse(context, f"client_{client.state}", f"client {client.name} is {client.state}")
    return client


def rate_charge(context: FetchContext, client: Client) -> FetchRefused | None:
    """Charge one request to the client's budget: a fixed window per client, in the shared
    counters (database, or Redis when set). The refusal to raise once over the limit, else
    None; the caller raises it after its transaction committed, so the charge stays.

    Charged only for a request that is authentic (its signature verified) and new (fresh
    timestamp, unseen nonce): a client's certificate is public and a request it sent in
    clear can be replayed by whoever saw it, so anything else would let anyone spend its
    budget."""
    limit = settings.KMS_CLIENT_RATE_LIMIT
    if not limit:
        return None
    window = settings.KMS_CLIENT_RATE_WINDOW_SECONDS
    now = timezone.now().timestamp()
    bucket = int(now // window)
    name = f"kms:rate:{client.pk}:{bucket}"
    # kmsportal.counters: every worker and node shares the count (database or Redis).
    count = counter_add(counters(), name, timeout=window * 2)
    if count <= limit:
        return None
    retry = int(window - (now % window)) + 1
    return _refuse(
        context,
        "rate_limited",
        f"more than {limit} requests in {window} s; retry in {retry} s",
        429,
        retry_after=retry,
    )


def nonce_consume(context: FetchContext, nonce: bytes) -> None:
    """The replay check, in `request_admit`'s transaction: a second insert of the nonce fails
    on the unique index (on PostgreSQL it waits for the first transaction to end). A replay
    is refused before the request counts as the client's: it is tallied, not audited."""
    holder = context.client.name if context.client else context.subject
    try:
        insert_row(ReplayNonce, nonce=nonce.hex(), client_name=holder[:64], seen_at=timezone.now())
    except IntegrityError:
        # Nothing more runs in this transaction: raising leaves it (rolled back).
        raise _refuse(
            context, "replayed_request", "this request was already received (replay)", 409
        ) from None
    # Nonces older than the timestamp window can never be replayed successfully anyway.
    if secrets.randbelow(100) == 0:
        cutoff = timezone.now() - 2 * protocol.MAX_CLOCK_SKEW - timedelta(minutes=1)
        ReplayNonce.objects.filter(seen_at__lt=cutoff).delete()


def request_admit(
    context: FetchContext,
    *,
    stored: ClientCertificate,
    presented: _PresentedCertificate,
    timestamp: str,
    nonce: bytes,
    now: datetime,
) -> Client:
    """After the request's signature verified: is it new, whose is it, may it be served?

    In this order: the timestamp (401 stale_timestamp) and the nonce (409 replayed_request),
    then the certificate's standing and the client's state, then the rate budget (429).
    Whoever saw a signed request (plain HTTP is supported) can send it again, so the first
    two refusals are nobody's: counted per source address (`refusal_tally`), never audited
    in the client's name nor charged to its budget. A request that passes them was signed
    for this moment by the holder of the client's key: what follows is the client's.

    The nonce, the standing read and the charge are one transaction, committed before the
    refusal (if any) is raised: the nonce of a refused request is spent too, so a replay of
    it is refused as a replay (tallied), never judged again in the client's name. A refusal
    of the client's standing is not charged to its budget; one for the budget is.
    """
    try:
        protocol.check_timestamp(timestamp, now=now)
    except protocol.ProtocolError as exc:
        raise _refuse(context, exc.code, exc.message, 401) from exc
    certificate_holder(context, stored)
    with transaction.atomic():
        nonce_consume(context, nonce)
        # From here on the request is authentic and new: its refusals are the client's.
        context.attributable = True
        try:
            client = certificate_status(context, presented, stored, now)
        except FetchRefused as refusal:
            refused: FetchRefused | None = refusal
        else:
            refused = rate_charge(context, client)
    if refused is not None:
        raise refused
    return client


@dataclass
class _Delivery:
    key: SymmetricKey
    version: KeyVersion
    server_identity: uuid.UUID | None


def _version_to_deliver(
    context: FetchContext, client: Client, request: protocol.FetchRequest
) -> _Delivery:
    """What to deliver, every authorisation check made; the caller holds the key row lock
    (PostgreSQL) or the database's write lock (SQLite), so this reads committed state."""
    now = timezone.now()
    by_number = request.version is not None
    row = delivery_row(client_id=client.pk, key_name=request.key_name, version=request.version)
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
        [as_uuid(key_id), key_name, key_state, min_decryption_version],
    )
    expires_at = as_datetime(expires_at)
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
    identity = None if server_identity is None else as_uuid(server_identity)
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
    context = FetchContext()
    try:
        return _key_fetch(body=body, request_id=request_id, context=context)
    except FetchRefused as refusal:
        _audit_refusal(context, refusal)
        raise


def _key_fetch(*, body: Any, request_id: str, context: FetchContext) -> dict[str, Any]:
    now = timezone.now()
    if isinstance(body, dict):
        context.key_name = str(body.get("key_name", ""))[:100]
    try:
        request, signature = protocol.FetchRequest.from_json(body)
    except protocol.ProtocolError as exc:
        raise _refuse(context, exc.code, exc.message, 400) from exc
    row, presented = certificate_lookup(context, request.client_certificate_pem)
    try:
        protocol.verify_fetch_request_signature(request, signature, presented.public_key)
    except protocol.ProtocolError as exc:
        status = 401 if exc.code == "bad_signature" else 400
        raise _refuse(context, exc.code, exc.message, status) from exc
    # Fresh, new, then the client's: standing and rate budget (never before, see
    # `request_admit`).
    client = request_admit(
        context,
        stored=row,
        presented=presented,
        timestamp=request.timestamp,
        nonce=request.client_nonce,
        now=now,
    )
    # One transaction, one commit: the delivery ledger row and the audit event (a refusal
    # rolls it back; `key_fetch` then records the refusal).
    with transaction.atomic():
        if connection.features.has_select_for_update:
            # Lock the key row: a compromise or suspension committed before this point is
            # seen by the next statement; one committing after waits until this delivery is
            # recorded. (SQLite: this transaction began with the database's write lock.)
            key_row_lock(request.key_name)
        context.key_name = request.key_name
        delivery = _version_to_deliver(context, client, request)
        key, version = delivery.key, delivery.version
        try:
            if version.sealed_material is None:  # destroyed: no state above delivers it
                raise EnvelopeError("no sealed material")
            material = unseal_material(bytes(version.sealed_material), aad=version.aad)
        except (EnvelopeError, KeyBackendError) as exc:
            refusal = FetchRefused(
                "integrity_error",
                f"key {key.name} version {version.number} failed its integrity check",
                500,
            )
            refusal.outcome = Outcome.ERROR
            raise refusal from exc
        credential = server_credential_of(delivery.server_identity)
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
                server_status=server_status_staple(credential.certificate_id),
            )
        except protocol.ProtocolError as exc:
            # A degenerate ephemeral public value (low-order X25519 point, ffdhe3072 value
            # out of range or outside the prime-order subgroup): the client's mistake or
            # attack, answered as such and audited in its name.
            raise _refuse(context, exc.code, exc.message, 400) from exc
        finally:
            del material
        insert_row(
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
