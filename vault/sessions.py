"""Operations API sessions, server side: open one (the authenticated exchange), then answer
protected requests in it (`kmsportal.crypto.session` documents the bytes).

Opening a session runs the very checks of the key fetch (`vault.exchange`): the client
certificate is one this KMS's identity CA issued to a client, its signature on the request
verifies, the timestamp is within ±5 minutes and the nonce is new (refusals so far are
tallied, not audited in the client's name: anyone can replay a request they saw), then it
is valid and not revoked, the client is active, and the request is charged to the client's
rate budget. The
answer is signed by the server identity clients pinned at enrollment, with the stapled
status of its certificate.

The session's 64-byte secret is stored sealed under the master keyring (AAD names the row),
so any worker of any server can serve the session; each process keeps the unsealed keys of
sessions it served, until they expire. Every request re-reads the session row with its
client's state (a suspended or revoked client is refused at once) and advances the session
counter with one conditional UPDATE in the same transaction as the operation's audit event.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.db import connection, transaction
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.crypto import batch_frame, protocol
from kmsportal.crypto import session as wire
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.errors import KMSError
from kmsportal.errors import problem_document, problem_document_for
from kmsportal.keyring.services import seal, unseal
from pki.selectors import certificate_standing

from . import exchange, models, refusals, server_identity
from .events import VaultAction
from .models import Client, ClientState, OperationSession
from .operations import OPERATIONS_API, OperationRefused, key_operation_perform
from .queries import as_datetime, as_uuid, session_counter_advance, session_row
from .refusals import FetchRefused

SESSION_TTL = timedelta(minutes=15)
PING = "ping"
_KEYS_CACHE_SIZE = 4096
Body = TypeVar("Body")
Sealed = TypeVar("Sealed")


class SessionRefused(KMSError):
    """A session-level refusal (no usable session, replay, malformed envelope)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message, code=code, status=status)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- opening -----------------------------------------------------------------------------------


def operation_session_open(*, body: Any) -> dict[str, Any]:
    """Answer a session request (JSON parsed) or raise FetchRefused (audited or tallied as
    the fetch's refusals are)."""
    context = exchange.FetchContext()
    try:
        return _open(body, context)
    except FetchRefused as refusal:
        _audit_open_refusal(context, refusal)
        raise


def _open(body: Any, context: exchange.FetchContext) -> dict[str, Any]:
    now = timezone.now()
    try:
        request, signature = wire.SessionRequest.from_json(body)
    except protocol.ProtocolError as exc:
        raise FetchRefused(exc.code, exc.message, 400) from exc
    row, presented = exchange.certificate_lookup(context, request.client_certificate_pem)
    try:
        request.verify(signature, presented.public_key)
    except protocol.ProtocolError as exc:
        status = 401 if exc.code == "bad_signature" else 400
        raise FetchRefused(exc.code, exc.message, status) from exc
    # Fresh and new, then the client's: standing and rate budget (`exchange.request_admit`).
    client = exchange.request_admit(
        context,
        stored=row,
        presented=presented,
        timestamp=request.timestamp,
        nonce=request.client_nonce,
        now=now,
    )
    expires_at = now + SESSION_TTL
    with transaction.atomic():
        identity_id = models.ServerIdentity.objects.values_list("pk", flat=True).first()
        credential = server_identity.server_credential_of(identity_id)
        try:
            answer, keys = wire.build_session_response(
                request=request,
                request_signature=signature,
                client_name=client.name,
                expires_at=expires_at,
                server_private_key=credential.key,
                server_chain_pems=credential.chain,
                server_status=server_identity.server_status_staple(credential.certificate_id),
            )
        except protocol.ProtocolError as exc:
            raise FetchRefused(exc.code, exc.message, 400) from exc
        session_id = keys.session_id.hex()
        stored = OperationSession(
            id=session_id,
            client_id=client.pk,
            # The presented certificate is the client's current one (`certificate_status`).
            certificate_id=Client.objects.values_list("certificate_id", flat=True).get(
                pk=client.pk
            ),
            created_at=now,
            expires_at=expires_at,
        )
        stored.sealed_key = seal(keys.secret, aad=stored.aad)
        stored.save(force_insert=True)
        _remember(session_id, keys, expires_at)
        audit_event_record(
            action=VaultAction.CLIENT_SESSION_OPENED,
            actor=client,
            actor_name=client.name,
            target=client,
            target_label=client.name,
            details={
                "client": client.name,
                "session": session_id[:8],
                "expires_at": expires_at.isoformat(),
                "group": request.group,
            },
        )
        if secrets.randbelow(100) == 0:
            OperationSession.objects.filter(expires_at__lt=now - timedelta(hours=1)).delete()
    return answer


def _audit_open_refusal(context: exchange.FetchContext, refusal: FetchRefused) -> None:
    if not context.attributable:
        refusals.refusal_tally(code=refusal.code)
        return
    with transaction.atomic():
        client = context.client
        audit_event_record(
            action=VaultAction.KEY_OPERATION_REFUSED,
            outcome=Outcome.DENIED,
            actor=client,
            anonymous=client is None,
            actor_name=client.name if client else (context.subject or "unknown client"),
            target_type="vault.Client",
            target_label=client.name if client else "",
            details={"operation": "session", "code": refusal.code, "reason": refusal.message[:300]},
        )


# --- the session keys cache ----------------------------------------------------------------------

_keys_lock = threading.Lock()
_keys: OrderedDict[str, tuple[wire.SessionKeys, datetime]] = OrderedDict()


def _remember(session_id: str, keys: wire.SessionKeys, expires_at: datetime) -> None:
    with _keys_lock:
        _keys[session_id] = (keys, expires_at)
        while len(_keys) > _KEYS_CACHE_SIZE:
            _keys.popitem(last=False)


def _session_keys(row: OperationSession, now: datetime) -> wire.SessionKeys:
    with _keys_lock:
        cached = _keys.get(row.id)
    if cached is not None and cached[1] == row.expires_at:
        return cached[0]
    try:
        secret = unseal(bytes(row.sealed_key), aad=row.aad)
    except EnvelopeError:
        raise SessionRefused("unknown_session", "this session does not open here", 401) from None
    keys = wire.SessionKeys.from_secret(bytes.fromhex(row.id), secret)
    _remember(row.id, keys, row.expires_at)
    return keys


def operation_sessions_forget() -> None:
    """Drop this process's unsealed session keys (tests)."""
    with _keys_lock:
        _keys.clear()


# --- protected requests ----------------------------------------------------------------------------


def _session_row(session_id: str, now: datetime) -> tuple[OperationSession, Client]:
    row = session_row(session_id)
    if row is None:
        raise SessionRefused("unknown_session", "no such session; open a new one", 401)
    expires_at = as_datetime(row[1])
    if expires_at is None or expires_at <= now:  # (None cannot be: the column is NOT NULL)
        raise SessionRefused("session_expired", "the session has expired; open a new one", 401)
    session = OperationSession(id=session_id, sealed_key=row[0], expires_at=expires_at)
    client = Client.from_db(
        connection.alias, ["id", "name", "state"], [as_uuid(row[2]), row[3], row[4]]
    )
    if client.state != ClientState.ACTIVE:
        raise SessionRefused(
            f"client_{client.state}", f"client {client.name} is {client.state}", 403
        )
    same_certificate = row[5]
    # The certificate's standing through pki's selectors: vault never reads pki's tables.
    standing = certificate_standing(pk=row[6], now=now)
    if standing is None:  # the session's certificate row is gone (cannot happen: a FK)
        raise SessionRefused("unknown_session", "no such session; open a new one", 401)
    if standing.is_revoked:
        raise SessionRefused("certificate_revoked", "the client certificate is revoked", 401)
    if standing.is_expired:
        raise SessionRefused("certificate_expired", "the client certificate has expired", 401)
    if not same_certificate:
        raise SessionRefused(
            "client_reenrolled", "the client enrolled a new certificate; open a new session", 401
        )
    session.client_id = client.pk
    return session, client


class _Framing(Generic[Body, Sealed]):
    """How one framing of the protected requests parses, opens and seals (JSON envelope or
    the binary frame, `kmsportal.crypto.session` and `kmsportal.crypto.batch_frame`)."""

    def __init__(
        self,
        parse: Callable[[Body], wire.Envelope],
        open_: Callable[[wire.SessionKeys, str, wire.Envelope], Any],
        seal: Callable[[wire.SessionKeys, str, wire.Envelope, int, Any], Sealed],
        *,
        raw: bool,
    ) -> None:
        self.parse, self.open, self.seal = parse, open_, seal
        self.raw = raw  # binary results (plaintexts, data keys) as bytes, not base64


_JSON = _Framing[Any, dict[str, str]](
    wire.parse_envelope, wire.open_request, wire.seal_response, raw=False
)
_BINARY = _Framing[bytes, bytes](
    batch_frame.parse_request, batch_frame.open_request, batch_frame.seal_response, raw=True
)


def operation_request_handle(*, operation: str, body: Any) -> tuple[int, dict[str, str]]:
    """Answer one protected request in the JSON envelope: (HTTP status, sealed answer).
    SessionRefused if there is no session to answer in (the caller then sends a plain
    problem document)."""
    return _handle(operation, body, _JSON)


def operation_binary_request_handle(*, operation: str, body: bytes) -> tuple[int, bytes]:
    """Answer one protected request in the binary frame: (HTTP status, sealed answer bytes).
    The same checks, counter, service and audit as the JSON envelope; a frame that does not
    open or is malformed is refused (SessionRefused) before anything is used or changed."""
    return _handle(operation, body, _BINARY)


def _handle(operation: str, body: Body, framing: _Framing[Body, Sealed]) -> tuple[int, Sealed]:
    if operation not in OPERATIONS_API and operation != PING:
        raise SessionRefused("unknown_operation", f"no operation {operation!r}", 404)
    now = timezone.now()
    try:
        envelope = framing.parse(body)
    except protocol.ProtocolError as exc:
        raise SessionRefused(exc.code, exc.message, 400) from exc
    row, client = _session_row(envelope.session_id.hex(), now)
    keys = _session_keys(row, now)
    try:
        inner = framing.open(keys, operation, envelope)
    except protocol.ProtocolError as exc:
        raise SessionRefused(exc.code, exc.message, 400) from exc
    with transaction.atomic():
        # The replay check: only an authentic request (it opened) moves the counter, and
        # only forward. Every worker and server shares the row.
        moved = session_counter_advance(row.id, envelope.counter, now)
        if not moved:
            status, answer = (
                409,
                problem_document(
                    "replayed_request",
                    "this counter was already used in this session (replayed or reordered)",
                    409,
                ),
            )
        elif operation == PING:
            status, answer = 200, {"client": client.name}
        else:
            status, answer = _perform(client, operation, inner, raw=framing.raw)
    if not moved:
        refusals.refusal_tally(code="replayed_request")
    return status, framing.seal(keys, operation, envelope, status, answer)


def _perform(
    client: Client, operation: str, inner: Any, *, raw: bool
) -> tuple[int, dict[str, Any]]:
    if not isinstance(inner, dict) or not isinstance(inner.get("items", None), list):
        return 400, problem_document(
            "malformed_request", 'expected {"key": NAME, "items": [...], "options": {...}}', 400
        )
    options = inner.get("options") or {}
    if not isinstance(options, dict):
        return 400, problem_document("malformed_request", "options must be an object", 400)
    try:
        result = key_operation_perform(
            client=client,
            operation=operation,
            key_name=inner.get("key"),
            items=inner["items"],
            options=options,
            raw=raw,
        )
    except OperationRefused as refusal:
        return refusal.status, problem_document_for(refusal)
    return 200, {"key": result.key, "operation": result.operation, "results": result.results}
