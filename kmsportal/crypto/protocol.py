"""Key distribution protocol v1: the pure cryptographic core (no HTTP, no database).

Mutually authenticated ephemeral Diffie-Hellman in one round trip. The client signs its
request with the key of its ``kms-client`` certificate; the server answers with key material
encrypted under a key derived from the ephemeral exchange and signs the whole transcript with
its distribution key. Certificate-chain, revocation, replay (nonce) and authorisation checks
are the caller's job (the Django views / ``kmsclient``); this module does the bytes.

Encodings
---------
* **Canonical JSON**: RFC 8785 (:func:`kmsportal.crypto.canonical.canonical_json`), UTF-8;
  the same bytes as ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)`` for every message (fixed ASCII member names, strings and integers;
  no floats, which the encoder refuses). Binary values are standard base64 with padding;
  decoders accept only the canonical encoding (what the encoder would produce).
* **Timestamps**: UTC, second precision, ``YYYY-MM-DDTHH:MM:SSZ``.
* **Signatures**: RSA keys (>= 2048 bits) sign with RSASSA-PSS, SHA-256, MGF1-SHA-256, salt
  length 32; EC keys with ECDSA-SHA-256 (DER-encoded ``Ecdsa-Sig-Value``).

Request (client -> server), a JSON object::

    {"protocol": 1, "type": "fetch-request", "key_name": str, "version": int | null,
     "group": "x25519" | "ffdhe3072", "client_public": b64, "client_nonce": b64 (16 bytes),
     "timestamp": str, "client_certificate_pem": str, "signature": b64}

``RS`` = canonical JSON of every member except ``signature``; ``signature = Sign_client(RS)``.

Response (server -> client), a JSON object::

    {"protocol": 1, "type": "fetch-response", "group": str, "server_public": b64,
     "server_nonce": b64 (16 bytes), "key_name": str, "version": int, "client_name": str,
     "server_certificate_chain": [PEM, ...] (leaf first), "server_status": b64 (DER OCSP
     response for the leaf, signed by the server-identity CA), "gcm_nonce": b64 (12 bytes),
     "ciphertext": b64 (AES-GCM ciphertext || 16-byte tag), "signature": b64}

``server_status`` is the stapled revocation status of the server's own certificate (issue
13): a fresh OCSP response, under the transcript signature like every other member, which
the client checks for age and status (`kmsportal.crypto.server_identity`).

Transcript hash
---------------
``TH(fields) = SHA-256(F(RS) || F(request signature) || F(canonical JSON of fields))`` where
``F(x) = uint64_be(len(x)) || x``. Length-prefixing makes the framing unambiguous: no two
different (request, signature, response) triples hash the same byte string, whatever bytes
each part contains (plain concatenation would let bytes slide from one part to the next).

Key schedule and encryption
---------------------------
1. ``Z`` = DH shared secret of the two ephemeral keys in ``group`` (x25519: 32 bytes,
   ffdhe3072: 384 bytes big-endian, left-padded).
2. ``H_pre = TH(response members except signature, gcm_nonce and ciphertext)`` (the
   "pre-transcript": everything the server says that does not depend on the ciphertext,
   including ``protocol``, ``type`` and the certificate chain).
3. ``K = HKDF-SHA256(IKM=Z, salt=client_nonce || server_nonce,
   info=b"kmsportal key distribution v1" || b"|" || H_pre, L=32)``.
4. ``ciphertext = AES-256-GCM(K, gcm_nonce, plaintext=key material,
   AAD=UTF-8(f"{key_name}|{version}|{client_name}"))``; ``gcm_nonce`` is 12 random bytes.
   The AAD is unambiguous: key names cannot contain ``|`` and the version is an integer, so
   the client name (last) can be anything.
5. ``H = TH(response members except signature)``;
   ``signature = Sign_server(b"kmsportal key distribution v1|fetch-response|" || H)``.

Why this is sound: K depends on both fresh ephemeral keys and both fresh nonces and on a hash
of the signed request, so every exchange uses a distinct key (GCM nonce reuse across
exchanges is impossible); the server signature covers the request (hence the client's
ephemeral key and nonce) and every response member, so a man in the middle cannot substitute
his own ephemeral key; the client signature binds its ephemeral key to its certificate. Both
ephemeral private keys are dropped after one use: a later compromise of either long-term
key does not reveal past key material (forward secrecy). Python cannot wipe memory, so
"dropped" means no reference is kept; the garbage collector frees the OpenSSL objects.

Error codes (``ProtocolError.code``), stable for machines:
request parsing: ``malformed_request``, ``unsupported_protocol``, ``unsupported_group``,
``bad_key_name``, ``bad_version``, ``bad_public_key``, ``bad_nonce``, ``bad_timestamp``,
``bad_certificate``, ``bad_signature``; request checks: ``bad_signature``,
``stale_timestamp``, ``unsupported_key_type``; server exchange: ``bad_public_key``;
response: ``malformed_response``, ``unsupported_protocol``, ``bad_certificate``,
``bad_server_signature``, ``response_mismatch``, ``bad_public_key``, ``decryption_failed``,
``state_consumed``; enrollment: ``malformed_request``, ``bad_token``, ``bad_token_proof``,
``malformed_response``, ``bad_server_mac``, ``bad_server_signature``.

Enrollment (an observer learns nothing usable)
----------------------------------------------
The one-time token ``T`` (32 random bytes, 64 hex digits) never crosses the wire. Both sides
derive ``token_id = HKDF(T, info=ENROLL_LABEL|token-id, 16 bytes)`` and ``K_mac = HKDF(T,
info=ENROLL_LABEL|mac-key, 32 bytes)``. The client sends::

    {"protocol": 1, "type": "enroll-request", "token_id": hex, "csr": PEM,
     "client_nonce": b64 (16 bytes), "mac": b64}

with ``mac = HMAC-SHA256(K_mac, ENROLL_LABEL|enroll-request| || canonical JSON of the other
members)``: it proves possession of T and binds the CSR, so a captured request cannot be
replayed with another CSR. The server stores only SHA-256(token_id) and K_mac sealed under
its master keyring. Its answer::

    {"protocol": 1, "type": "enroll-response", "client", "certificate", "chain",
     "root_ca_certificate", "not_after", "server_identity": {"ca_spki_sha256", "deployment"},
     "server_certificate_chain": [PEM, ...], "server_nonce": b64, "mac": b64, "signature": b64}

``H = SHA-256(F(canonical request, mac included) || F(canonical response without mac and
signature))``; ``mac = HMAC-SHA256(K_mac, ENROLL_LABEL|enroll-response| || H)`` (only the KMS
that issued T can make it) and ``signature = Sign_server(ENROLL_LABEL|enroll-response| || H)``
(the server identity the client is about to pin vouches for it too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
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

__all__ = [
    "ENROLL_LABEL",
    "GCM_NONCE_BYTES",
    "KEY_NAME_MAX_LENGTH",
    "MAX_CLOCK_SKEW",
    "MAX_KEY_MATERIAL_BYTES",
    "MAX_VERSION",
    "NONCE_BYTES",
    "PROTOCOL_LABEL",
    "PROTOCOL_VERSION",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "ClientExchangeState",
    "EnrollRequest",
    "EnrollResponse",
    "EnrollState",
    "FetchRequest",
    "FetchedKey",
    "PrivateKey",
    "ProtocolError",
    "PublicKey",
    "build_enroll_request",
    "build_enroll_response",
    "build_fetch_request",
    "build_fetch_response",
    "check_timestamp",
    "enrollment_token_keys",
    "enrollment_token_lookup",
    "format_timestamp",
    "new_enrollment_token",
    "open_enroll_response",
    "open_fetch_response",
    "parse_enroll_request",
    "parse_timestamp",
    "server_leaf_certificate",
    "sign",
    "transcript_hash",
    "verify_enroll_request",
    "verify_fetch_request",
    "verify_fetch_request_signature",
    "verify_signature",
]

PROTOCOL_VERSION = 1
PROTOCOL_LABEL = b"kmsportal key distribution v1"
MAX_CLOCK_SKEW = timedelta(minutes=5)

#: Client and server nonces: 128 bits each, fresh from the OS CSPRNG per message.
NONCE_BYTES = 16
#: AES-GCM nonce: 96 bits, random. Each derived key encrypts exactly one message anyway.
GCM_NONCE_BYTES = 12
_GCM_TAG_BYTES = 16
_AES_KEY_BYTES = 32

REQUEST_TYPE = "fetch-request"
RESPONSE_TYPE = "fetch-response"

KEY_NAME_MAX_LENGTH = 100
#: Versions are positive and fit a signed 32-bit database column.
MAX_VERSION = 2**31 - 1
MAX_KEY_MATERIAL_BYTES = 65536
_CLIENT_NAME_MAX_LENGTH = 200
_MAX_PEM_CHARS = 16384
_MAX_CHAIN_LENGTH = 8
_MAX_SIGNATURE_BYTES = 1024  # RSA-8192
_MIN_RSA_BITS = 2048

#: What the server signs is this context followed by the 32-byte transcript hash, so that a
#: signature made here can never be replayed as a signature in another protocol.
_SERVER_SIGNATURE_CONTEXT = PROTOCOL_LABEL + b"|fetch-response|"

_KEY_NAME_RE = re.compile(r"[a-z0-9_.-]{1,100}", re.ASCII)
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_PEM_CERTIFICATE_MARKER = "-----BEGIN CERTIFICATE-----"

# RSASSA-PSS exactly as both sides use it; the salt length is fixed (not "maximum" or "auto")
# so that other implementations can interoperate and verification is strict.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_REQUEST_MEMBERS = frozenset(
    {
        "protocol",
        "type",
        "key_name",
        "version",
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
        "key_name",
        "version",
        "client_name",
        "server_certificate_chain",
        "server_status",
        "gcm_nonce",
        "ciphertext",
        "signature",
    }
)
#: A stapled OCSP response for one certificate is well under 2 KiB (RSA-4096 signature).
_MAX_STATUS_BYTES = 8192


class ProtocolError(Exception):
    """A protocol message is malformed, fails a check, or does not verify.

    `code` is a stable machine-readable string (see the module docstring); `message` is for
    people and never contains key material.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- encodings ---------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: object, *, member: str, code: str) -> bytes:
    """Decode standard base64, accepting only its canonical form (padding, no stray bits)."""
    if not isinstance(value, str) or not value.isascii():
        raise ProtocolError(code, f"{member} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(code, f"{member} is not valid base64") from None
    if _b64encode(data) != value:
        raise ProtocolError(code, f"{member} is not canonical base64")
    return data


def format_timestamp(moment: datetime) -> str:
    """`moment` (timezone-aware) as a protocol timestamp: UTC, seconds, ``Z`` suffix."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(timestamp: object) -> datetime:
    """An aware UTC datetime from a protocol timestamp; ProtocolError("bad_timestamp")."""
    if not isinstance(timestamp, str) or not _TIMESTAMP_RE.fullmatch(timestamp):
        raise ProtocolError("bad_timestamp", "timestamp must look like 2026-11-28T14:42:19Z")
    try:
        return datetime.strptime(timestamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ProtocolError("bad_timestamp", f"timestamp {timestamp} is not a valid date") from None


def check_timestamp(timestamp: str, *, now: datetime) -> None:
    """Refuse a request timestamp more than `MAX_CLOCK_SKEW` away from `now` (either way).

    The window bounds how long a captured request stays interesting; within it, replay is
    stopped by the caller remembering client nonces for at least 2 x MAX_CLOCK_SKEW.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    moment = parse_timestamp(timestamp)
    if abs(now - moment) > MAX_CLOCK_SKEW:
        raise ProtocolError(
            "stale_timestamp",
            f"request timestamp {timestamp} is outside ±5 minutes of server time "
            f"{format_timestamp(now)}",
        )


# --- field validation (each returns a problem description, or None) -----------------------


def _is_int(value: object) -> bool:
    # bool is a subclass of int; true/false are not versions.
    return type(value) is int


def _key_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _KEY_NAME_RE.fullmatch(value):
        return f"key_name must be 1-{KEY_NAME_MAX_LENGTH} characters of [a-z0-9_.-]"
    return None


def _version_problem(value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and _is_int(value) and 1 <= value <= MAX_VERSION:
        return None
    return f"version must be an integer from 1 to {MAX_VERSION}" + (" or null" if optional else "")


def _pem_problem(value: object, *, member: str) -> str | None:
    if (
        not isinstance(value, str)
        or not value.isascii()
        or len(value) > _MAX_PEM_CHARS
        or _PEM_CERTIFICATE_MARKER not in value
    ):
        return f"{member} must be a PEM certificate (ASCII, at most {_MAX_PEM_CHARS} chars)"
    return None


def _client_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= _CLIENT_NAME_MAX_LENGTH:
        return f"client_name must be a string of 1-{_CLIENT_NAME_MAX_LENGTH} characters"
    try:
        value.encode("utf-8")  # lone surrogates from JSON cannot be hashed or put in the AAD
    except UnicodeEncodeError:
        return "client_name is not valid Unicode"
    return None


def _check(problem: str | None, code: str) -> None:
    if problem is not None:
        raise ProtocolError(code, problem)


def _check_members(
    obj: object, expected: frozenset[str], *, kind: str, code: str
) -> dict[str, Any]:
    """`obj` must be a JSON object of protocol v1 with exactly the `expected` members."""
    if not isinstance(obj, dict):
        raise ProtocolError(code, f"the {kind} must be a JSON object")
    # Checked before the member set, so a future version is reported as such, not as garbage.
    if "protocol" in obj and not (_is_int(obj["protocol"]) and obj["protocol"] == PROTOCOL_VERSION):
        raise ProtocolError(
            "unsupported_protocol", f"only protocol {PROTOCOL_VERSION} is supported"
        )
    missing = sorted(expected - obj.keys())
    if missing:
        raise ProtocolError(code, f"the {kind} lacks: {', '.join(missing)}")
    unexpected = sorted(str(k) for k in obj.keys() - expected)
    if unexpected:
        # Unknown members would be neither signed nor checked: refuse them outright.
        raise ProtocolError(code, f"the {kind} has unknown members: {', '.join(unexpected)}")
    return obj


def _decode_signature(value: object, *, code: str) -> bytes:
    signature = _b64decode(value, member="signature", code=code)
    if not 1 <= len(signature) <= _MAX_SIGNATURE_BYTES:
        raise ProtocolError(code, "signature has an impossible length")
    return signature


# --- signatures --------------------------------------------------------------------------


def _signature_key_problem(key: object, *, private: bool) -> str | None:
    """Why `key` cannot sign (private) or verify (public) in this protocol, or None."""
    rsa_type = rsa.RSAPrivateKey if private else rsa.RSAPublicKey
    ec_type = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
    if isinstance(key, rsa_type):
        if key.key_size < _MIN_RSA_BITS:
            return f"RSA keys shorter than {_MIN_RSA_BITS} bits are refused"
        return None
    if isinstance(key, ec_type):
        return None
    half = "private" if private else "public"
    return f"only RSA and EC {half} keys are supported here, not {type(key).__name__}"


def sign(private_key: PrivateKey, data: bytes) -> bytes:
    """Sign `data`: RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) or ECDSA-SHA-256 (DER).

    TypeError for other key types and for RSA keys under 2048 bits.
    """
    problem = _signature_key_problem(private_key, private=True)
    if problem is not None:
        raise TypeError(problem)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, _PSS, hashes.SHA256())
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True if `signature` over `data` verifies under `public_key` (see `sign`).

    TypeError for unsupported key types (a caller bug, not a bad signature).
    """
    problem = _signature_key_problem(public_key, private=False)
    if problem is not None:
        raise TypeError(problem)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _PSS, hashes.SHA256())
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- transcript --------------------------------------------------------------------------


def transcript_hash(
    request_signed_bytes: bytes, request_signature: bytes, response_fields: dict[str, Any]
) -> bytes:
    """SHA-256 over ``F(request_signed_bytes) || F(request_signature) || F(JSON)``.

    ``F(x) = uint64_be(len(x)) || x`` and ``JSON`` is the canonical JSON of `response_fields`,
    which must not contain the server's ``signature``. The length prefixes give unambiguous
    framing: the boundary between parts cannot be moved without changing the hash input.
    """
    if "signature" in response_fields:
        raise ValueError("the transcript never includes the server's own signature")
    digest = hashes.Hash(hashes.SHA256())
    for part in (request_signed_bytes, request_signature, canonical_json(response_fields)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.finalize()


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
        _check(_key_name_problem(self.key_name), "bad_key_name")
        _check(_version_problem(self.version, optional=True), "bad_version")
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
        _check(
            _pem_problem(self.client_certificate_pem, member="client_certificate_pem"),
            "bad_certificate",
        )

    def _members(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "type": REQUEST_TYPE,
            "key_name": self.key_name,
            "version": self.version,
            "group": self.group,
            "client_public": _b64encode(self.client_public),
            "client_nonce": _b64encode(self.client_nonce),
            "timestamp": self.timestamp,
            "client_certificate_pem": self.client_certificate_pem,
        }

    def signed_bytes(self) -> bytes:
        """The canonical JSON the client signs (every request member except the signature)."""
        return canonical_json(self._members())

    def to_json(self, signature: bytes) -> dict[str, Any]:
        """The request body: the signed members plus ``signature`` (base64)."""
        return {**self._members(), "signature": _b64encode(signature)}

    @classmethod
    def from_json(cls, obj: object) -> tuple[FetchRequest, bytes]:
        """Parse and validate a request body; returns the request and its (unverified) signature.

        Strict: exactly the protocol's members, right types, canonical base64, exact lengths.
        The signature is NOT checked here; see `verify_fetch_request`.
        """
        body = _check_members(obj, _REQUEST_MEMBERS, kind="request", code="malformed_request")
        if body["type"] != REQUEST_TYPE:
            raise ProtocolError("malformed_request", f"type must be {REQUEST_TYPE!r}")
        request = cls(
            key_name=body["key_name"],
            version=body["version"],
            group=body["group"],
            client_public=_b64decode(
                body["client_public"], member="client_public", code="bad_public_key"
            ),
            client_nonce=_b64decode(body["client_nonce"], member="client_nonce", code="bad_nonce"),
            timestamp=body["timestamp"],
            client_certificate_pem=body["client_certificate_pem"],
        )
        return request, _decode_signature(body["signature"], code="bad_signature")


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
    problem = _signature_key_problem(client_public_key, private=False)
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
            "server_public": _b64encode(self.server_public),
            "server_nonce": _b64encode(self.server_nonce),
            "key_name": self.key_name,
            "version": self.version,
            "client_name": self.client_name,
            "server_certificate_chain": list(self.server_certificate_chain),
            "server_status": _b64encode(self.server_status),
        }

    def transcript_members(self) -> dict[str, Any]:
        """Every member the server signs (all but the signature itself)."""
        return {
            **self.key_schedule_members(),
            "gcm_nonce": _b64encode(self.gcm_nonce),
            "ciphertext": _b64encode(self.ciphertext),
        }

    def aad(self) -> bytes:
        """AES-GCM associated data: ``key_name|version|client_name`` (UTF-8)."""
        return f"{self.key_name}|{self.version}|{self.client_name}".encode()


def _chain_problem(value: object) -> str | None:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= _MAX_CHAIN_LENGTH:
        return f"server_certificate_chain must list 1-{_MAX_CHAIN_LENGTH} PEM certificates"
    for pem in value:
        problem = _pem_problem(pem, member="server_certificate_chain entry")
        if problem is not None:
            return problem
    return None


def _parse_response(obj: object) -> tuple[_ResponseFields, bytes]:
    code = "malformed_response"
    body = _check_members(obj, _RESPONSE_MEMBERS, kind="response", code=code)
    if body["type"] != RESPONSE_TYPE:
        raise ProtocolError(code, f"type must be {RESPONSE_TYPE!r}")
    group = body["group"]
    if not isinstance(group, str) or group not in GROUPS:
        raise ProtocolError(code, f"group {group!r} is not one of {', '.join(GROUPS)}")
    server_public = _b64decode(body["server_public"], member="server_public", code=code)
    if len(server_public) != public_key_length(group):
        raise ProtocolError(code, f"server_public must be {public_key_length(group)} bytes")
    server_nonce = _b64decode(body["server_nonce"], member="server_nonce", code=code)
    if len(server_nonce) != NONCE_BYTES:
        raise ProtocolError(code, f"server_nonce must be {NONCE_BYTES} bytes")
    _check(_key_name_problem(body["key_name"]), code)
    _check(_version_problem(body["version"], optional=False), code)
    _check(_client_name_problem(body["client_name"]), code)
    _check(_chain_problem(body["server_certificate_chain"]), code)
    server_status = _b64decode(body["server_status"], member="server_status", code=code)
    if not 1 <= len(server_status) <= _MAX_STATUS_BYTES:
        raise ProtocolError(code, "server_status has an impossible length")
    gcm_nonce = _b64decode(body["gcm_nonce"], member="gcm_nonce", code=code)
    if len(gcm_nonce) != GCM_NONCE_BYTES:
        raise ProtocolError(code, f"gcm_nonce must be {GCM_NONCE_BYTES} bytes")
    ciphertext = _b64decode(body["ciphertext"], member="ciphertext", code=code)
    if not _GCM_TAG_BYTES < len(ciphertext) <= MAX_KEY_MATERIAL_BYTES + _GCM_TAG_BYTES:
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
    return fields, _decode_signature(body["signature"], code=code)


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
        length=_AES_KEY_BYTES,
    )


def _server_signature_input(
    request_signed_bytes: bytes, request_signature: bytes, fields: _ResponseFields
) -> bytes:
    return _SERVER_SIGNATURE_CONTEXT + transcript_hash(
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
        _version_problem(version, optional=False),
        _client_name_problem(client_name),
        _chain_problem(server_chain_pems),
    ):
        if problem is not None:
            raise ValueError(problem)
    if not isinstance(key_material, bytes) or not 1 <= len(key_material) <= MAX_KEY_MATERIAL_BYTES:
        raise ValueError(f"key_material must be 1-{MAX_KEY_MATERIAL_BYTES} bytes")
    if not isinstance(server_status, bytes) or not 1 <= len(server_status) <= _MAX_STATUS_BYTES:
        raise ValueError(f"server_status must be 1-{_MAX_STATUS_BYTES} bytes of DER")

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
    return {**fields.transcript_members(), "signature": _b64encode(signature)}


def server_leaf_certificate(response: object) -> x509.Certificate:
    """The first (leaf) certificate of a response's ``server_certificate_chain``.

    Only parses it. The caller must validate the chain to its pinned CA, the ``kms-server``
    profile, validity and revocation before passing the leaf's public key to
    `open_fetch_response`.
    """
    if not isinstance(response, dict) or "server_certificate_chain" not in response:
        raise ProtocolError("malformed_response", "the response has no server_certificate_chain")
    chain = response["server_certificate_chain"]
    _check(_chain_problem(chain), "malformed_response")
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
            "client_nonce": _b64encode(self.client_nonce),
        }

    def maced_bytes(self) -> bytes:
        return canonical_json(self._members())

    def to_json(self) -> dict[str, Any]:
        return {**self._members(), "mac": _b64encode(self.mac)}

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
    request = _check_members(body, _ENROLL_REQUEST_MEMBERS, kind="enrollment request", code=code)
    if request["type"] != ENROLL_REQUEST_TYPE:
        raise ProtocolError(code, f"type must be {ENROLL_REQUEST_TYPE!r}")
    token_id = request["token_id"]
    if not isinstance(token_id, str) or not _TOKEN_ID_RE.fullmatch(token_id):
        raise ProtocolError(code, "token_id must be 32 lower-case hex digits")
    csr = request["csr"]
    if not isinstance(csr, str) or not csr.isascii() or not 1 <= len(csr) <= _MAX_CSR_CHARS:
        raise ProtocolError(code, f"csr must be a PEM CSR of at most {_MAX_CSR_CHARS} characters")
    nonce = _b64decode(request["client_nonce"], member="client_nonce", code=code)
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(code, f"client_nonce must be {NONCE_BYTES} bytes")
    mac = _b64decode(request["mac"], member="mac", code=code)
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
    _check(_chain_problem(server_chain_pems), "malformed_response")
    members = {
        **answer,
        "protocol": PROTOCOL_VERSION,
        "type": ENROLL_RESPONSE_TYPE,
        "server_certificate_chain": list(server_chain_pems),
        "server_nonce": _b64encode(os.urandom(NONCE_BYTES)),
    }
    signed = _enroll_transcript(request, members)
    return {
        **members,
        "mac": _b64encode(hmac.new(mac_key, signed, hashlib.sha256).digest()),
        "signature": _b64encode(sign(server_private_key, signed)),
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
    body = _check_members(response, _ENROLL_RESPONSE_MEMBERS, kind="enrollment answer", code=code)
    if body["type"] != ENROLL_RESPONSE_TYPE:
        raise ProtocolError(code, f"type must be {ENROLL_RESPONSE_TYPE!r}")
    mac = _b64decode(body["mac"], member="mac", code=code)
    signature = _decode_signature(body["signature"], code=code)
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
    _check(_chain_problem(body["server_certificate_chain"]), code)
    identity = body["server_identity"]
    if (
        not isinstance(identity, dict)
        or set(identity) != {"ca_spki_sha256", "deployment"}
        or not all(isinstance(v, str) for v in identity.values())
    ):
        raise ProtocolError(code, "server_identity must be {ca_spki_sha256, deployment}")
    return EnrollResponse(members=members, _signed=signed, _signature=signature)
