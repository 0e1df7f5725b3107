"""Operations API sessions: the key exchange and the per-request envelope (pure, no Django).

Plaintext and data keys never cross the wire in clear, not even over plain HTTP: every
operations request and response is AES-256-GCM encrypted under keys agreed by the same
mutually authenticated ephemeral Diffie-Hellman as the key fetch
(`kmsportal.crypto.protocol`), and TLS only adds a second layer.

Handshake (``POST /api/v1/session``), one round trip
----------------------------------------------------
Request, signed by the client's ``kms-client`` key exactly like a fetch request::

    {"protocol": 1, "type": "session-request", "group": "x25519" | "ffdhe3072",
     "client_public": b64, "client_nonce": b64 (16 bytes), "timestamp": str,
     "client_certificate_pem": str, "signature": b64}

``signature = Sign_client(canonical JSON of every other member)``. The server checks the
certificate (chain, profile, validity, revocation, client active), the signature, the
timestamp (±5 minutes) and the nonce (never seen) with the very code of the fetch. Response::

    {"protocol": 1, "type": "session-response", "group", "server_public": b64,
     "server_nonce": b64 (16 bytes), "session_id": b64 (16 bytes), "expires_at": timestamp,
     "client_name": str, "server_certificate_chain": [PEM, ...], "server_status": b64,
     "signature": b64}

``H = TH(request signed bytes, request signature, every response member but signature)``
(`protocol.transcript_hash`, length-prefixed); ``signature = Sign_server(LABEL |
"|session-response|" || H)``. The client verifies the server identity it pinned at
enrollment and the stapled status as for a fetch, then the signature; both derive::

    K = HKDF-SHA256(IKM = Z, salt = client_nonce || server_nonce,
                    info = LABEL || "|keys|" || H, L = 64)
    K_c2s = K[:32]  (client -> server),  K_s2c = K[32:]  (server -> client)

Both ephemeral private keys are then dropped (forward secrecy). The session lives until
``expires_at`` (15 minutes) and belongs to that client only: the server stores K sealed
under its master keyring, in a row naming the client.

Per-request envelope (``POST /api/v1/keys/<operation>``)
--------------------------------------------------------
::

    {"session": b64 session id, "counter": int, "nonce": b64 (12 bytes), "ciphertext": b64}

``ciphertext = AES-256-GCM(K_c2s, nonce, canonical JSON of the operation's body,
AAD = LABEL || "|request|" || F(session id) || F(operation) || uint64(counter))``. The
server accepts a counter only if it is greater than every counter it accepted in this
session (one atomic conditional UPDATE, shared by every worker and node): a replayed,
reordered or dropped-and-resent request is refused (``replayed_request``). The answer::

    {"nonce": b64 (12 bytes), "ciphertext": b64}

``ciphertext = AES-256-GCM(K_s2c, nonce, canonical JSON {"status": int, "body": ...},
AAD = LABEL || "|response|" || F(session id) || F(operation) || uint64(counter)
|| F(request nonce))``: the response is bound to the very request it answers, so a
response cannot be swapped for another one, moved to another operation, or replayed.
Nonces are 96 random bits; each direction has its own key, so client and server nonces
can never collide under one key. ``F(x) = uint64(len(x)) || x``.

The binary frame (`kmsportal.crypto.batch_frame`) carries the same requests and answers
with the items' bytes outside JSON and base64, under AAD labels of its own
(``|binary-request|``, ``|binary-response|``) and the same session counter.
"""

from __future__ import annotations

import binascii
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto.canonical import canonical_json
from kmsportal.crypto.dh import GROUPS, X25519, DHError, generate_ephemeral, hkdf_sha256
from kmsportal.crypto.dh import public_key_length as _public_key_length
from kmsportal.crypto.protocol.encoding import (  # the fetch's encodings, shared
    NONCE_BYTES,
    PROTOCOL_VERSION,
    PrivateKey,
    ProtocolError,
    PublicKey,
    b64encode,
    check_members,
    format_timestamp,
    parse_timestamp,
    sign,
    transcript_hash,
    verify_signature,
)

LABEL = b"kmsportal operations session v1"
REQUEST_TYPE = "session-request"
RESPONSE_TYPE = "session-response"
SESSION_ID_BYTES = 16
GCM_NONCE_BYTES = 12
MAX_COUNTER = 2**62
_REQUEST_MEMBERS = frozenset(
    {
        "protocol",
        "type",
        "group",
        "client_public",
        "client_nonce",
        "timestamp",
        "client_certificate_pem",
        "signature",
    }
)
_RESPONSE_MEMBERS = frozenset(
    {
        "protocol",
        "type",
        "group",
        "server_public",
        "server_nonce",
        "session_id",
        "expires_at",
        "client_name",
        "server_certificate_chain",
        "server_status",
        "signature",
    }
)
_ENVELOPE_MEMBERS = frozenset({"session", "counter", "nonce", "ciphertext"})
_MAX_PEM_CHARS = 16384
_MAX_SIGNATURE_BYTES = 1024


_b64 = b64encode


def _unb64(value: object, member: str, code: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise ProtocolError(code, f"{member} must be a base64 string")
    try:
        # strict_mode refuses stray characters, bad padding and data after the padding, in C.
        data = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(code, f"{member} is not valid base64") from None
    # Canonical: the length the encoder gives, and the last quantum re-encodes to itself
    # (no stray bits in its padding).
    tail = data[-(len(data) % 3 or 3) :]
    if len(value) != 4 * ((len(data) + 2) // 3) or (data and _b64(tail) != value[-4:]):
        raise ProtocolError(code, f"{member} is not canonical base64")
    return data


def _members(obj: object, expected: frozenset[str], kind: str, code: str) -> dict[str, Any]:
    """`obj` is a protocol v1 object with exactly `expected` members (as in the fetch)."""
    return check_members(obj, expected, kind=kind, code=code)


def _framed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


# --- handshake ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRequest:
    """A client's session request (every member but the signature), validated."""

    group: str
    client_public: bytes
    client_nonce: bytes
    timestamp: str
    client_certificate_pem: str

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ProtocolError("unsupported_group", f"group must be one of {', '.join(GROUPS)}")
        if len(self.client_public) != _public_key_length(self.group):
            raise ProtocolError("bad_public_key", "client_public has the wrong length")
        if len(self.client_nonce) != NONCE_BYTES:
            raise ProtocolError("bad_nonce", f"client_nonce must be {NONCE_BYTES} bytes")
        parse_timestamp(self.timestamp)
        pem = self.client_certificate_pem
        if (
            not isinstance(pem, str)
            or not pem.isascii()
            or len(pem) > _MAX_PEM_CHARS
            or "-----BEGIN CERTIFICATE-----" not in pem
        ):
            raise ProtocolError(
                "bad_certificate", "client_certificate_pem must be a PEM certificate"
            )

    def _members(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "type": REQUEST_TYPE,
            "group": self.group,
            "client_public": _b64(self.client_public),
            "client_nonce": _b64(self.client_nonce),
            "timestamp": self.timestamp,
            "client_certificate_pem": self.client_certificate_pem,
        }

    def signed_bytes(self) -> bytes:
        return canonical_json(self._members())

    @classmethod
    def from_json(cls, obj: object) -> tuple[SessionRequest, bytes]:
        """Parse strictly; returns the request and its (not yet verified) signature."""
        code = "malformed_request"
        body = _members(obj, _REQUEST_MEMBERS, "session request", code)
        if body["type"] != REQUEST_TYPE:
            raise ProtocolError(code, f"type must be {REQUEST_TYPE!r}")
        if not isinstance(body["group"], str):
            raise ProtocolError("unsupported_group", "group must be a string")
        signature = _unb64(body["signature"], "signature", code)
        if not 1 <= len(signature) <= _MAX_SIGNATURE_BYTES:
            raise ProtocolError(code, "signature has an impossible length")
        request = cls(
            group=body["group"],
            client_public=_unb64(body["client_public"], "client_public", "bad_public_key"),
            client_nonce=_unb64(body["client_nonce"], "client_nonce", "bad_nonce"),
            timestamp=body["timestamp"],
            client_certificate_pem=body["client_certificate_pem"],
        )
        return request, signature

    def verify(self, signature: bytes, client_public_key: PublicKey) -> None:
        """ProtocolError("bad_signature") unless the client's key signed this request."""
        try:
            ok = verify_signature(client_public_key, signature, self.signed_bytes())
        except TypeError as exc:
            raise ProtocolError("unsupported_key_type", str(exc)) from None
        if not ok:
            raise ProtocolError("bad_signature", "the request signature does not verify")


@dataclass
class SessionKeys:
    """The two directional keys of a session (never in a repr)."""

    session_id: bytes
    client_to_server: bytes = field(repr=False)
    server_to_client: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, session_id: bytes, secret: bytes) -> SessionKeys:
        if len(secret) != 64:
            raise ValueError("a session secret is 64 bytes")
        return cls(session_id, secret[:32], secret[32:])

    @property
    def secret(self) -> bytes:
        return self.client_to_server + self.server_to_client


def _keys(shared: bytes, client_nonce: bytes, server_nonce: bytes, th: bytes) -> bytes:
    return hkdf_sha256(
        secret=shared, salt=client_nonce + server_nonce, info=LABEL + b"|keys|" + th, length=64
    )


def _signature_input(th: bytes) -> bytes:
    return LABEL + b"|session-response|" + th


@dataclass
class ClientSessionState:
    """What the client keeps between its request and the answer (single use)."""

    request: SessionRequest
    request_signature: bytes
    _ephemeral: Any = field(repr=False)


def build_session_request(
    *,
    client_private_key: PrivateKey,
    client_certificate_pem: str,
    now: datetime,
    group: str = X25519,
) -> tuple[dict[str, Any], ClientSessionState]:
    """Client: a signed session request and the state to open the answer with."""
    ephemeral = generate_ephemeral(group)
    request = SessionRequest(
        group=group,
        client_public=ephemeral.public_bytes(),
        client_nonce=os.urandom(NONCE_BYTES),
        timestamp=format_timestamp(now),
        client_certificate_pem=client_certificate_pem,
    )
    signature = sign(client_private_key, request.signed_bytes())
    body = {**request._members(), "signature": _b64(signature)}
    return body, ClientSessionState(request, signature, ephemeral)


def build_session_response(
    *,
    request: SessionRequest,
    request_signature: bytes,
    client_name: str,
    expires_at: datetime,
    server_private_key: PrivateKey,
    server_chain_pems: list[str],
    server_status: bytes,
) -> tuple[dict[str, Any], SessionKeys]:
    """Server: answer a verified request; returns the body and the session's keys."""
    ephemeral = generate_ephemeral(request.group)
    try:
        server_public = ephemeral.public_bytes()
        shared = ephemeral.exchange(request.client_public)
    except DHError as exc:
        raise ProtocolError("bad_public_key", str(exc)) from None
    finally:
        ephemeral.discard()
    session_id = os.urandom(SESSION_ID_BYTES)
    server_nonce = os.urandom(NONCE_BYTES)
    members = {
        "protocol": PROTOCOL_VERSION,
        "type": RESPONSE_TYPE,
        "group": request.group,
        "server_public": _b64(server_public),
        "server_nonce": _b64(server_nonce),
        "session_id": _b64(session_id),
        "expires_at": format_timestamp(expires_at),
        "client_name": client_name,
        "server_certificate_chain": list(server_chain_pems),
        "server_status": _b64(server_status),
    }
    th = transcript_hash(request.signed_bytes(), request_signature, members)
    secret = _keys(shared, request.client_nonce, server_nonce, th)
    signature = sign(server_private_key, _signature_input(th))
    return {**members, "signature": _b64(signature)}, SessionKeys.from_secret(session_id, secret)


@dataclass(frozen=True)
class OpenedSession:
    keys: SessionKeys
    expires_at: datetime
    client_name: str


def open_session_response(
    *, state: ClientSessionState, response: object, trusted_server_public_key: PublicKey
) -> OpenedSession:
    """Client: verify the server's signature over the transcript, then derive the keys.

    The caller has already checked the server chain (``server_certificate_chain``) and the
    stapled status against the identity it pinned, and passes the leaf's public key.
    """
    ephemeral, state._ephemeral = state._ephemeral, None
    if ephemeral is None:
        raise ProtocolError("state_consumed", "this session request was already answered")
    try:
        code = "malformed_response"
        body = _members(response, _RESPONSE_MEMBERS, "session response", code)
        if body["type"] != RESPONSE_TYPE or body["group"] != state.request.group:
            raise ProtocolError("response_mismatch", "the answer is not for this request")
        signature = _unb64(body["signature"], "signature", code)
        members = {k: v for k, v in body.items() if k != "signature"}
        try:
            th = transcript_hash(state.request.signed_bytes(), state.request_signature, members)
        except (TypeError, ValueError):
            raise ProtocolError(code, "the answer is not canonical JSON") from None
        if not verify_signature(trusted_server_public_key, signature, _signature_input(th)):
            raise ProtocolError(
                "bad_server_signature", "the server signature over the session does not verify"
            )
        session_id = _unb64(body["session_id"], "session_id", code)
        server_nonce = _unb64(body["server_nonce"], "server_nonce", code)
        server_public = _unb64(body["server_public"], "server_public", code)
        if len(session_id) != SESSION_ID_BYTES or len(server_nonce) != NONCE_BYTES:
            raise ProtocolError(code, "session_id or server_nonce has the wrong length")
        try:
            shared = ephemeral.exchange(server_public)
        except DHError as exc:
            raise ProtocolError("bad_public_key", str(exc)) from None
        secret = _keys(shared, state.request.client_nonce, server_nonce, th)
        return OpenedSession(
            keys=SessionKeys.from_secret(session_id, secret),
            expires_at=parse_timestamp(body["expires_at"]),
            client_name=str(body["client_name"]),
        )
    finally:
        ephemeral.discard()


# --- the per-request envelope ------------------------------------------------------------------


def _request_aad(session_id: bytes, operation: str, counter: int) -> bytes:
    return (
        LABEL + b"|request|" + _framed(session_id, operation.encode()) + struct.pack(">Q", counter)
    )


def _response_aad(session_id: bytes, operation: str, counter: int, request_nonce: bytes) -> bytes:
    return (
        LABEL
        + b"|response|"
        + _framed(session_id, operation.encode())
        + struct.pack(">Q", counter)
        + _framed(request_nonce)
    )


@dataclass(frozen=True)
class Envelope:
    """A parsed request envelope (not yet opened)."""

    session_id: bytes
    counter: int
    nonce: bytes
    ciphertext: bytes


def seal_request(
    keys: SessionKeys, operation: str, counter: int, body: Any
) -> tuple[dict[str, Any], bytes]:
    """Client: the envelope for `body` (JSON-able); returns it and its nonce (to open the
    answer with)."""
    nonce = os.urandom(GCM_NONCE_BYTES)
    sealed = AESGCM(keys.client_to_server).encrypt(
        nonce, canonical_json(body), _request_aad(keys.session_id, operation, counter)
    )
    envelope = {
        "session": _b64(keys.session_id),
        "counter": counter,
        "nonce": _b64(nonce),
        "ciphertext": _b64(sealed),
    }
    return envelope, nonce


def parse_envelope(obj: object) -> Envelope:
    """Server: parse a request envelope strictly (``malformed_request``)."""
    code = "malformed_request"
    body = _members(obj, _ENVELOPE_MEMBERS, "request envelope", code)
    counter = body["counter"]
    if type(counter) is not int or not 1 <= counter <= MAX_COUNTER:
        raise ProtocolError(code, "counter must be a positive integer")
    session_id = _unb64(body["session"], "session", code)
    nonce = _unb64(body["nonce"], "nonce", code)
    if len(session_id) != SESSION_ID_BYTES or len(nonce) != GCM_NONCE_BYTES:
        raise ProtocolError(code, "session or nonce has the wrong length")
    return Envelope(session_id, counter, nonce, _unb64(body["ciphertext"], "ciphertext", code))


def open_request(keys: SessionKeys, operation: str, envelope: Envelope) -> Any:
    """Server: decrypt and parse the request body (``bad_envelope`` if it does not open:
    altered, another session's key, or sent to another operation or with another counter)."""
    try:
        plain = AESGCM(keys.client_to_server).decrypt(
            envelope.nonce,
            envelope.ciphertext,
            _request_aad(keys.session_id, operation, envelope.counter),
        )
    except InvalidTag:
        raise ProtocolError(
            "bad_envelope", "the request does not open under this session (altered or misrouted)"
        ) from None
    try:
        # Decoded first: json.loads of bytes guesses the encoding and decodes with
        # surrogatepass, several times slower than this on a batch of a megabyte.
        return json.loads(plain.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("malformed_request", "the request body is not JSON") from None


def seal_response(
    keys: SessionKeys, operation: str, envelope: Envelope, status: int, body: Any
) -> dict[str, str]:
    """Server: the protected answer to `envelope`."""
    nonce = os.urandom(GCM_NONCE_BYTES)
    sealed = AESGCM(keys.server_to_client).encrypt(
        nonce,
        canonical_json({"status": status, "body": body}),
        _response_aad(keys.session_id, operation, envelope.counter, envelope.nonce),
    )
    return {"nonce": _b64(nonce), "ciphertext": _b64(sealed)}


def open_response(
    keys: SessionKeys, operation: str, counter: int, request_nonce: bytes, response: object
) -> tuple[int, Any]:
    """Client: (status, body) of a protected answer to our request with `counter`."""
    code = "malformed_response"
    if not isinstance(response, dict) or set(response) != {"nonce", "ciphertext"}:
        raise ProtocolError(code, "expected a protected answer {nonce, ciphertext}")
    nonce = _unb64(response["nonce"], "nonce", code)
    try:
        plain = AESGCM(keys.server_to_client).decrypt(
            nonce,
            _unb64(response["ciphertext"], "ciphertext", code),
            _response_aad(keys.session_id, operation, counter, request_nonce),
        )
    except InvalidTag:
        raise ProtocolError(
            "bad_envelope", "the answer does not open: altered, or not the answer to our request"
        ) from None
    answer = json.loads(plain.decode("utf-8"))
    return int(answer["status"]), answer["body"]
