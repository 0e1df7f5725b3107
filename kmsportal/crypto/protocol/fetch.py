"""The key fetch: the signed request, the server's encrypted and signed response."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto.canonical import canonical_json
from kmsportal.crypto.dh import (
    GROUPS,
    X25519,
    DHError,
    EphemeralKeyPair,
    generate_ephemeral,
    hkdf_sha256,
    public_key_length,
)
from kmsportal.crypto.protocol.encoding import (
    AES_KEY_BYTES,
    GCM_NONCE_BYTES,
    GCM_TAG_BYTES,
    MAX_KEY_MATERIAL_BYTES,
    MAX_STATUS_BYTES,
    NONCE_BYTES,
    PROTOCOL_LABEL,
    PROTOCOL_VERSION,
    REQUEST_MEMBERS,
    REQUEST_TYPE,
    RESPONSE_MEMBERS,
    RESPONSE_TYPE,
    SERVER_SIGNATURE_CONTEXT,
    PrivateKey,
    ProtocolError,
    PublicKey,
    b64decode,
    b64encode,
    chain_problem,
    check_members,
    check_timestamp,
    client_name_problem,
    decode_signature,
    format_timestamp,
    key_name_problem,
    parse_timestamp,
    pem_problem,
    require,
    sign,
    signature_key_problem,
    transcript_hash,
    verify_signature,
    version_problem,
)

# --- request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    """A client's request for one key version (every member but the signature).

    Constructing one validates every field (ProtocolError with the field's code), so an
    instance always satisfies the protocol's invariants.
    """

    key_name: str
    version: int | None
    group: str
    client_public: bytes
    client_nonce: bytes
    timestamp: str
    client_certificate_pem: str

    def __post_init__(self) -> None:
        require(key_name_problem(self.key_name), "bad_key_name")
        require(version_problem(self.version, optional=True), "bad_version")
        if not isinstance(self.group, str) or self.group not in GROUPS:
            raise ProtocolError(
                "unsupported_group",
                f"group {self.group!r} is not one of {', '.join(GROUPS)}",
            )
        expected = public_key_length(self.group)
        if not isinstance(self.client_public, bytes) or len(self.client_public) != expected:
            raise ProtocolError(
                "bad_public_key", f"client_public must be {expected} bytes for {self.group}"
            )
        if not isinstance(self.client_nonce, bytes) or len(self.client_nonce) != NONCE_BYTES:
            raise ProtocolError("bad_nonce", f"client_nonce must be {NONCE_BYTES} bytes")
        parse_timestamp(self.timestamp)
        require(
            pem_problem(self.client_certificate_pem, member="client_certificate_pem"),
            "bad_certificate",
        )

    def _members(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "type": REQUEST_TYPE,
            "key_name": self.key_name,
            "version": self.version,
            "group": self.group,
            "client_public": b64encode(self.client_public),
            "client_nonce": b64encode(self.client_nonce),
            "timestamp": self.timestamp,
            "client_certificate_pem": self.client_certificate_pem,
        }

    def signed_bytes(self) -> bytes:
        """The canonical JSON the client signs (every request member except the signature)."""
        return canonical_json(self._members())

    def to_json(self, signature: bytes) -> dict[str, Any]:
        """The request body: the signed members plus ``signature`` (base64)."""
        return {**self._members(), "signature": b64encode(signature)}

    @classmethod
    def from_json(cls, obj: object) -> tuple[FetchRequest, bytes]:
        """Parse and validate a request body; returns the request and its (unverified) signature.

        Strict: exactly the protocol's members, right types, canonical base64, exact lengths.
        The signature is NOT checked here; see `verify_fetch_request`.
        """
        body = check_members(obj, REQUEST_MEMBERS, kind="request", code="malformed_request")
        if body["type"] != REQUEST_TYPE:
            raise ProtocolError("malformed_request", f"type must be {REQUEST_TYPE!r}")
        request = cls(
            key_name=body["key_name"],
            version=body["version"],
            group=body["group"],
            client_public=b64decode(
                body["client_public"], member="client_public", code="bad_public_key"
            ),
            client_nonce=b64decode(body["client_nonce"], member="client_nonce", code="bad_nonce"),
            timestamp=body["timestamp"],
            client_certificate_pem=body["client_certificate_pem"],
        )
        return request, decode_signature(body["signature"], code="bad_signature")


class ClientExchangeState:
    """What the client keeps between sending a request and opening the response.

    Holds the ephemeral private key, so it is single-use: `open_fetch_response` takes the key
    out (and drops it) on the first call, whatever the outcome. Never persist or pickle it.
    """

    __slots__ = ("_ephemeral", "_request", "_request_signature")

    def __init__(
        self, *, request: FetchRequest, request_signature: bytes, ephemeral: EphemeralKeyPair
    ) -> None:
        self._request = request
        self._request_signature = request_signature
        self._ephemeral: EphemeralKeyPair | None = ephemeral

    def __repr__(self) -> str:
        state = "used" if self._ephemeral is None else "pending"
        return f"<ClientExchangeState {self._request.key_name} {state}>"

    @property
    def request(self) -> FetchRequest:
        """The request as sent."""
        return self._request

    @property
    def request_signature(self) -> bytes:
        """The client's signature over `request.signed_bytes()`."""
        return self._request_signature

    def _take_ephemeral(self) -> EphemeralKeyPair:
        ephemeral, self._ephemeral = self._ephemeral, None
        if ephemeral is None:
            raise ProtocolError("state_consumed", "this exchange state has already been used")
        return ephemeral


def build_fetch_request(
    *,
    key_name: str,
    version: int | None,
    group: str = X25519,
    client_certificate_pem: str,
    client_private_key: PrivateKey,
    now: datetime | None = None,
) -> tuple[dict[str, Any], ClientExchangeState]:
    """Client: a signed request body, and the state needed to open the response.

    A fresh ephemeral key and a fresh 128-bit nonce are generated for every call; neither is
    ever reused. ProtocolError for invalid fields (same codes as the server would answer),
    TypeError for an unsupported client key.
    """
    if not isinstance(group, str) or group not in GROUPS:
        raise ProtocolError(
            "unsupported_group", f"group {group!r} is not one of {', '.join(GROUPS)}"
        )
    moment = datetime.now(UTC) if now is None else now
    ephemeral = generate_ephemeral(group)
    request = FetchRequest(
        key_name=key_name,
        version=version,
        group=group,
        client_public=ephemeral.public_bytes(),
        client_nonce=os.urandom(NONCE_BYTES),
        timestamp=format_timestamp(moment),
        client_certificate_pem=client_certificate_pem,
    )
    signature = sign(client_private_key, request.signed_bytes())
    state = ClientExchangeState(request=request, request_signature=signature, ephemeral=ephemeral)
    return request.to_json(signature), state


def verify_fetch_request(
    body: object, client_public_key: PublicKey, *, now: datetime
) -> tuple[FetchRequest, bytes]:
    """Server: parse a request body, verify the client's signature, then its timestamp.

    `client_public_key` is the public key of the certificate in the request, which the
    caller has already validated (chain to the CA, ``kms-client`` profile, validity,
    revocation, client active). Replay (nonce seen before) is the caller's check too. The
    signature is checked before the timestamp so that ``stale_timestamp`` is only ever
    reported for an authentic request (a clock problem, not a forgery).
    """
    request, signature = FetchRequest.from_json(body)
    verify_fetch_request_signature(request, signature, client_public_key)
    check_timestamp(request.timestamp, now=now)
    return request, signature


def verify_fetch_request_signature(
    request: FetchRequest, signature: bytes, client_public_key: PublicKey
) -> None:
    """The signature half of `verify_fetch_request`, for a server that must know a request
    is authentic (to charge the client's rate budget, to audit in its name) before it
    looks at anything else: ProtocolError ``unsupported_key_type`` or ``bad_signature``."""
    problem = signature_key_problem(client_public_key, private=False)
    if problem is not None:
        raise ProtocolError("unsupported_key_type", problem)
    if not verify_signature(client_public_key, signature, request.signed_bytes()):
        raise ProtocolError("bad_signature", "the request signature does not verify")


# --- response ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedKey:
    """Key material the client obtained; `material` is kept out of the repr (and logs)."""

    key_name: str
    version: int
    material: bytes = field(repr=False)


@dataclass(frozen=True)
class _ResponseFields:
    """Every response member except the signature, decoded."""

    group: str
    server_public: bytes
    server_nonce: bytes
    key_name: str
    version: int
    client_name: str
    server_certificate_chain: tuple[str, ...]
    server_status: bytes
    gcm_nonce: bytes
    ciphertext: bytes

    def key_schedule_members(self) -> dict[str, Any]:
        """The pre-transcript: members that do not depend on the ciphertext."""
        return {
            "protocol": PROTOCOL_VERSION,
            "type": RESPONSE_TYPE,
            "group": self.group,
            "server_public": b64encode(self.server_public),
            "server_nonce": b64encode(self.server_nonce),
            "key_name": self.key_name,
            "version": self.version,
            "client_name": self.client_name,
            "server_certificate_chain": list(self.server_certificate_chain),
            "server_status": b64encode(self.server_status),
        }

    def transcript_members(self) -> dict[str, Any]:
        """Every member the server signs (all but the signature itself)."""
        return {
            **self.key_schedule_members(),
            "gcm_nonce": b64encode(self.gcm_nonce),
            "ciphertext": b64encode(self.ciphertext),
        }

    def aad(self) -> bytes:
        """AES-GCM associated data: ``key_name|version|client_name`` (UTF-8)."""
        return f"{self.key_name}|{self.version}|{self.client_name}".encode()


def _parse_response(obj: object) -> tuple[_ResponseFields, bytes]:
    code = "malformed_response"
    body = check_members(obj, RESPONSE_MEMBERS, kind="response", code=code)
    if body["type"] != RESPONSE_TYPE:
        raise ProtocolError(code, f"type must be {RESPONSE_TYPE!r}")
    group = body["group"]
    if not isinstance(group, str) or group not in GROUPS:
        raise ProtocolError(code, f"group {group!r} is not one of {', '.join(GROUPS)}")
    server_public = b64decode(body["server_public"], member="server_public", code=code)
    if len(server_public) != public_key_length(group):
        raise ProtocolError(code, f"server_public must be {public_key_length(group)} bytes")
    server_nonce = b64decode(body["server_nonce"], member="server_nonce", code=code)
    if len(server_nonce) != NONCE_BYTES:
        raise ProtocolError(code, f"server_nonce must be {NONCE_BYTES} bytes")
    require(key_name_problem(body["key_name"]), code)
    require(version_problem(body["version"], optional=False), code)
    require(client_name_problem(body["client_name"]), code)
    require(chain_problem(body["server_certificate_chain"]), code)
    server_status = b64decode(body["server_status"], member="server_status", code=code)
    if not 1 <= len(server_status) <= MAX_STATUS_BYTES:
        raise ProtocolError(code, "server_status has an impossible length")
    gcm_nonce = b64decode(body["gcm_nonce"], member="gcm_nonce", code=code)
    if len(gcm_nonce) != GCM_NONCE_BYTES:
        raise ProtocolError(code, f"gcm_nonce must be {GCM_NONCE_BYTES} bytes")
    ciphertext = b64decode(body["ciphertext"], member="ciphertext", code=code)
    if not GCM_TAG_BYTES < len(ciphertext) <= MAX_KEY_MATERIAL_BYTES + GCM_TAG_BYTES:
        raise ProtocolError(code, "ciphertext has an impossible length")
    fields = _ResponseFields(
        group=group,
        server_public=server_public,
        server_nonce=server_nonce,
        key_name=body["key_name"],
        version=body["version"],
        client_name=body["client_name"],
        server_certificate_chain=tuple(body["server_certificate_chain"]),
        server_status=server_status,
        gcm_nonce=gcm_nonce,
        ciphertext=ciphertext,
    )
    return fields, decode_signature(body["signature"], code=code)


def _derive_key(
    *,
    shared_secret: bytes,
    client_nonce: bytes,
    server_nonce: bytes,
    request_signed_bytes: bytes,
    request_signature: bytes,
    fields: _ResponseFields,
) -> bytes:
    """K = HKDF-SHA256(Z, salt = client_nonce || server_nonce, info = label | H_pre)."""
    pre_transcript = transcript_hash(
        request_signed_bytes, request_signature, fields.key_schedule_members()
    )
    # Both nonces are exactly NONCE_BYTES long, so their concatenation is unambiguous.
    return hkdf_sha256(
        secret=shared_secret,
        salt=client_nonce + server_nonce,
        info=PROTOCOL_LABEL + b"|" + pre_transcript,
        length=AES_KEY_BYTES,
    )


def _server_signature_input(
    request_signed_bytes: bytes, request_signature: bytes, fields: _ResponseFields
) -> bytes:
    return SERVER_SIGNATURE_CONTEXT + transcript_hash(
        request_signed_bytes, request_signature, fields.transcript_members()
    )


def build_fetch_response(
    *,
    request: FetchRequest,
    request_signature: bytes,
    key_name: str,
    version: int,
    client_name: str,
    key_material: bytes,
    server_private_key: PrivateKey,
    server_chain_pems: list[str],
    server_status: bytes,
) -> dict[str, Any]:
    """Server: encrypt `key_material` for the client of a verified request; the response body.

    `server_status` is the DER OCSP response for the server's own certificate (the staple).

    Call only after `verify_fetch_request` and every authorisation check. `key_name` must be
    the requested name and `version` the requested version when one was asked (ValueError
    otherwise: a caller bug). ProtocolError("bad_public_key") if the client's ephemeral key is
    degenerate (e.g. a low-order X25519 point). The server's ephemeral key lives only for
    the duration of this call.
    """
    if key_name != request.key_name:
        raise ValueError("key_name must be the name the client asked for")
    if request.version is not None and version != request.version:
        raise ValueError("version must be the version the client asked for")
    for problem in (
        version_problem(version, optional=False),
        client_name_problem(client_name),
        chain_problem(server_chain_pems),
    ):
        if problem is not None:
            raise ValueError(problem)
    if not isinstance(key_material, bytes) or not 1 <= len(key_material) <= MAX_KEY_MATERIAL_BYTES:
        raise ValueError(f"key_material must be 1-{MAX_KEY_MATERIAL_BYTES} bytes")
    if not isinstance(server_status, bytes) or not 1 <= len(server_status) <= MAX_STATUS_BYTES:
        raise ValueError(f"server_status must be 1-{MAX_STATUS_BYTES} bytes of DER")

    ephemeral = generate_ephemeral(request.group)
    try:
        server_public = ephemeral.public_bytes()
        shared_secret = ephemeral.exchange(request.client_public)
    except DHError as exc:
        raise ProtocolError("bad_public_key", str(exc)) from None
    finally:
        ephemeral.discard()  # forward secrecy: the server keeps nothing of this exchange

    fields = _ResponseFields(
        group=request.group,
        server_public=server_public,
        server_nonce=os.urandom(NONCE_BYTES),
        key_name=key_name,
        version=version,
        client_name=client_name,
        server_certificate_chain=tuple(server_chain_pems),
        server_status=server_status,
        gcm_nonce=os.urandom(GCM_NONCE_BYTES),
        ciphertext=b"",
    )
    request_signed_bytes = request.signed_bytes()
    key = _derive_key(
        shared_secret=shared_secret,
        client_nonce=request.client_nonce,
        server_nonce=fields.server_nonce,
        request_signed_bytes=request_signed_bytes,
        request_signature=request_signature,
        fields=fields,
    )
    ciphertext = AESGCM(key).encrypt(fields.gcm_nonce, key_material, fields.aad())
    fields = replace(fields, ciphertext=ciphertext)
    signature = sign(
        server_private_key,
        _server_signature_input(request_signed_bytes, request_signature, fields),
    )
    return {**fields.transcript_members(), "signature": b64encode(signature)}


def server_leaf_certificate(response: object) -> x509.Certificate:
    """The first (leaf) certificate of a response's ``server_certificate_chain``.

    Only parses it. The caller must validate the chain to its pinned CA, the ``kms-server``
    profile, validity and revocation before passing the leaf's public key to
    `open_fetch_response`.
    """
    if not isinstance(response, dict) or "server_certificate_chain" not in response:
        raise ProtocolError("malformed_response", "the response has no server_certificate_chain")
    chain = response["server_certificate_chain"]
    require(chain_problem(chain), "malformed_response")
    try:
        certificates = x509.load_pem_x509_certificates(chain[0].encode("ascii"))
    except ValueError:
        raise ProtocolError(
            "bad_certificate", "the server leaf certificate does not parse"
        ) from None
    if len(certificates) != 1:
        raise ProtocolError("bad_certificate", "each chain entry must hold exactly one certificate")
    return certificates[0]


def open_fetch_response(
    *,
    state: ClientExchangeState,
    response: object,
    trusted_server_public_key: PublicKey,
) -> FetchedKey:
    """Client: verify the server's response and decrypt the key material.

    Order matters: parse strictly, verify the server signature over the whole transcript
    (which binds our request, so a response to someone else's request or a substituted
    ephemeral key fails here), check it answers what we asked, then run DH, derive and
    decrypt. The ephemeral private key is dropped whatever happens (the state is single-use).
    """
    ephemeral = state._take_ephemeral()
    try:
        fields, signature = _parse_response(response)
        request = state.request
        signed = _server_signature_input(request.signed_bytes(), state.request_signature, fields)
        if not verify_signature(trusted_server_public_key, signature, signed):
            raise ProtocolError(
                "bad_server_signature", "the server signature over the transcript does not verify"
            )
        if fields.group != request.group:
            raise ProtocolError("response_mismatch", "the response uses another DH group")
        if fields.key_name != request.key_name:
            raise ProtocolError("response_mismatch", "the response is for another key")
        if request.version is not None and fields.version != request.version:
            raise ProtocolError("response_mismatch", "the response is for another key version")
        try:
            shared_secret = ephemeral.exchange(fields.server_public)
        except DHError as exc:
            raise ProtocolError("bad_public_key", str(exc)) from None
        key = _derive_key(
            shared_secret=shared_secret,
            client_nonce=request.client_nonce,
            server_nonce=fields.server_nonce,
            request_signed_bytes=request.signed_bytes(),
            request_signature=state.request_signature,
            fields=fields,
        )
        try:
            material = AESGCM(key).decrypt(fields.gcm_nonce, fields.ciphertext, fields.aad())
        except InvalidTag:
            raise ProtocolError(
                "decryption_failed", "the key material does not decrypt (tampered or wrong key)"
            ) from None
    finally:
        ephemeral.discard()
    return FetchedKey(key_name=fields.key_name, version=fields.version, material=material)
