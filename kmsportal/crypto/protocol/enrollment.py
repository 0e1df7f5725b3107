"""Enrollment: a client proves its one-time token with a MAC and gets its certificate."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import hashes

from kmsportal.crypto.canonical import canonical_json
from kmsportal.crypto.dh import (
    hkdf_sha256,
)
from kmsportal.crypto.protocol.encoding import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    PrivateKey,
    ProtocolError,
    PublicKey,
    b64decode,
    b64encode,
    chain_problem,
    check_members,
    decode_signature,
    require,
    sign,
    verify_signature,
)

# --- enrollment --------------------------------------------------------------------------

ENROLL_LABEL = b"kmsportal enrollment v1"
ENROLL_REQUEST_TYPE = "enroll-request"
ENROLL_RESPONSE_TYPE = "enroll-response"
_TOKEN_BYTES = 32
_TOKEN_ID_BYTES = 16
_MAC_BYTES = 32
_MAX_CSR_CHARS = 16384
_TOKEN_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_TOKEN_ID_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
_ENROLL_REQUEST_MEMBERS = frozenset({"protocol", "type", "token_id", "csr", "client_nonce", "mac"})
_ENROLL_ANSWER_MEMBERS = frozenset(
    {"client", "certificate", "chain", "root_ca_certificate", "not_after", "server_identity"}
)
_ENROLL_RESPONSE_MEMBERS = _ENROLL_ANSWER_MEMBERS | {
    "protocol",
    "type",
    "server_certificate_chain",
    "server_nonce",
    "mac",
    "signature",
}


def new_enrollment_token() -> str:
    """A fresh one-time enrollment token: 32 random bytes as 64 lower-case hex digits
    (never starts with ``-``, which a command line would take for an option)."""
    return os.urandom(_TOKEN_BYTES).hex()


def enrollment_token_keys(token: str) -> tuple[str, bytes]:
    """(token id as 32 hex digits, 32-byte MAC key), both derived from ``token`` by HKDF.

    The id travels (the server finds the pending enrollment by it); the MAC key never does.
    Knowing the id does not help to compute the MAC key: HKDF outputs for different labels
    are independent. ProtocolError("bad_token") if ``token`` is not 64 hex digits.
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token.strip().lower()):
        raise ProtocolError(
            "bad_token", "an enrollment token is 64 hex digits, as the portal showed it"
        )
    raw = bytes.fromhex(token.strip().lower())
    token_id = hkdf_sha256(
        secret=raw, salt=b"", info=ENROLL_LABEL + b"|token-id", length=_TOKEN_ID_BYTES
    )
    mac_key = hkdf_sha256(secret=raw, salt=b"", info=ENROLL_LABEL + b"|mac-key", length=_MAC_BYTES)
    return token_id.hex(), mac_key


def enrollment_token_lookup(token_id: str) -> str:
    """What the server stores to find a pending enrollment: SHA-256 (hex) of the token id."""
    return hashlib.sha256(bytes.fromhex(token_id)).hexdigest()


def _mac(key: bytes, context: bytes, data: bytes) -> bytes:
    return hmac.new(key, context + data, hashlib.sha256).digest()


@dataclass(frozen=True)
class EnrollRequest:
    """A parsed enrollment request; `mac` is not verified until `verify_enroll_request`."""

    token_id: str
    csr_pem: str
    client_nonce: bytes
    mac: bytes

    def _members(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "type": ENROLL_REQUEST_TYPE,
            "token_id": self.token_id,
            "csr": self.csr_pem,
            "client_nonce": b64encode(self.client_nonce),
        }

    def maced_bytes(self) -> bytes:
        return canonical_json(self._members())

    def to_json(self) -> dict[str, Any]:
        return {**self._members(), "mac": b64encode(self.mac)}

    @property
    def transcript_bytes(self) -> bytes:
        """The whole request (MAC included) as the response's transcript hash takes it."""
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class EnrollState:
    """What the client keeps between its enrollment request and the answer."""

    request: EnrollRequest
    mac_key: bytes = field(repr=False)


def build_enroll_request(*, token: str, csr_pem: str) -> tuple[dict[str, Any], EnrollState]:
    """Client: the enrollment request body for ``csr_pem``, proving ``token`` by a MAC."""
    token_id, mac_key = enrollment_token_keys(token)
    unsigned = EnrollRequest(
        token_id=token_id, csr_pem=csr_pem, client_nonce=os.urandom(NONCE_BYTES), mac=b""
    )
    request = replace(
        unsigned,
        mac=_mac(mac_key, ENROLL_LABEL + b"|enroll-request|", unsigned.maced_bytes()),
    )
    return request.to_json(), EnrollState(request=request, mac_key=mac_key)


def parse_enroll_request(body: object) -> EnrollRequest:
    """Server: parse an enrollment request strictly (``malformed_request``). The legacy form
    that carried the token itself is refused as ``legacy_enrollment``: a token in clear is
    exactly what this protocol exists to avoid, so there is no fallback to it."""
    if isinstance(body, dict) and "token" in body:
        raise ProtocolError(
            "legacy_enrollment",
            "this KMS no longer accepts the enrollment token in clear; upgrade kmsclient "
            "(the token is now proven with a MAC and never sent)",
        )
    code = "malformed_request"
    request = check_members(body, _ENROLL_REQUEST_MEMBERS, kind="enrollment request", code=code)
    if request["type"] != ENROLL_REQUEST_TYPE:
        raise ProtocolError(code, f"type must be {ENROLL_REQUEST_TYPE!r}")
    token_id = request["token_id"]
    if not isinstance(token_id, str) or not _TOKEN_ID_RE.fullmatch(token_id):
        raise ProtocolError(code, "token_id must be 32 lower-case hex digits")
    csr = request["csr"]
    if not isinstance(csr, str) or not csr.isascii() or not 1 <= len(csr) <= _MAX_CSR_CHARS:
        raise ProtocolError(code, f"csr must be a PEM CSR of at most {_MAX_CSR_CHARS} characters")
    nonce = b64decode(request["client_nonce"], member="client_nonce", code=code)
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(code, f"client_nonce must be {NONCE_BYTES} bytes")
    mac = b64decode(request["mac"], member="mac", code=code)
    if len(mac) != _MAC_BYTES:
        raise ProtocolError(code, f"mac must be {_MAC_BYTES} bytes")
    return EnrollRequest(token_id=token_id, csr_pem=csr, client_nonce=nonce, mac=mac)


def verify_enroll_request(request: EnrollRequest, mac_key: bytes) -> None:
    """Server: the request's MAC under the pending token's key (constant-time compare);
    ProtocolError("bad_token_proof") if it does not verify (another token, or a CSR changed
    on the way)."""
    expected = _mac(mac_key, ENROLL_LABEL + b"|enroll-request|", request.maced_bytes())
    if not hmac.compare_digest(expected, request.mac):
        raise ProtocolError(
            "bad_token_proof",
            "the request does not prove possession of the enrollment token (or was altered)",
        )


def _enroll_transcript(request: EnrollRequest, members: dict[str, Any]) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    for part in (request.transcript_bytes, canonical_json(members)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return ENROLL_LABEL + b"|enroll-response|" + digest.finalize()


def build_enroll_response(
    *,
    request: EnrollRequest,
    mac_key: bytes,
    answer: dict[str, Any],
    server_private_key: PrivateKey,
    server_chain_pems: list[str],
) -> dict[str, Any]:
    """Server: the enrollment answer, MACed under the token's key and signed by the server
    identity, both over the request and every member. ``answer`` holds exactly the members
    ``client``, ``certificate``, ``chain``, ``root_ca_certificate``, ``not_after`` and
    ``server_identity`` ({"ca_spki_sha256", "deployment"})."""
    if set(answer) != _ENROLL_ANSWER_MEMBERS:
        raise ValueError(f"answer must have exactly {sorted(_ENROLL_ANSWER_MEMBERS)}")
    require(chain_problem(server_chain_pems), "malformed_response")
    members = {
        **answer,
        "protocol": PROTOCOL_VERSION,
        "type": ENROLL_RESPONSE_TYPE,
        "server_certificate_chain": list(server_chain_pems),
        "server_nonce": b64encode(os.urandom(NONCE_BYTES)),
    }
    signed = _enroll_transcript(request, members)
    return {
        **members,
        "mac": b64encode(hmac.new(mac_key, signed, hashlib.sha256).digest()),
        "signature": b64encode(sign(server_private_key, signed)),
    }


@dataclass(frozen=True)
class EnrollResponse:
    """An enrollment answer whose MAC verified: it comes from the KMS that issued the token.

    The caller still validates the server chain and identity it is about to pin, then calls
    `signature_verifies` with the leaf's key."""

    members: dict[str, Any]
    _signed: bytes = field(repr=False)
    _signature: bytes = field(repr=False)

    def signature_verifies(self, server_public_key: PublicKey) -> bool:
        return verify_signature(server_public_key, self._signature, self._signed)


def open_enroll_response(*, state: EnrollState, response: object) -> EnrollResponse:
    """Client: check the answer's shape and its MAC (ProtocolError ``malformed_response``,
    ``bad_server_mac``): only the KMS that holds our token's key can have made it, and it
    answers our request (the MAC covers the request, so our CSR, as sent)."""
    code = "malformed_response"
    body = check_members(response, _ENROLL_RESPONSE_MEMBERS, kind="enrollment answer", code=code)
    if body["type"] != ENROLL_RESPONSE_TYPE:
        raise ProtocolError(code, f"type must be {ENROLL_RESPONSE_TYPE!r}")
    mac = b64decode(body["mac"], member="mac", code=code)
    signature = decode_signature(body["signature"], code=code)
    members = {k: v for k, v in body.items() if k not in ("mac", "signature")}
    try:
        signed = _enroll_transcript(state.request, members)
    except (TypeError, ValueError):
        raise ProtocolError(code, "the enrollment answer is not canonical JSON") from None
    expected = hmac.new(state.mac_key, signed, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise ProtocolError(
            "bad_server_mac",
            "the enrollment answer is not authenticated by our token: it does not come from "
            "the KMS that issued it, or was altered on the way",
        )
    require(chain_problem(body["server_certificate_chain"]), code)
    identity = body["server_identity"]
    if (
        not isinstance(identity, dict)
        or set(identity) != {"ca_spki_sha256", "deployment"}
        or not all(isinstance(v, str) for v in identity.values())
    ):
        raise ProtocolError(code, "server_identity must be {ca_spki_sha256, deployment}")
    return EnrollResponse(members=members, _signed=signed, _signature=signature)
