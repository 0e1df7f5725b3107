"""Protocol v1 basics shared by the fetch and the enrollment (and the operations sessions):
constants, ProtocolError, base64 and timestamps, field checks, signatures, the transcript hash."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from kmsportal.crypto.canonical import canonical_json
from kmsportal.crypto.errors import KMSError

PROTOCOL_VERSION = 1
PROTOCOL_LABEL = b"kmsportal key distribution v1"
MAX_CLOCK_SKEW = timedelta(minutes=5)

#: Client and server nonces: 128 bits each, fresh from the OS CSPRNG per message.
NONCE_BYTES = 16
#: AES-GCM nonce: 96 bits, random. Each derived key encrypts exactly one message anyway.
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
AES_KEY_BYTES = 32

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
SERVER_SIGNATURE_CONTEXT = PROTOCOL_LABEL + b"|fetch-response|"

_KEY_NAME_RE = re.compile(r"[a-z0-9_.-]{1,100}", re.ASCII)
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_PEM_CERTIFICATE_MARKER = "-----BEGIN CERTIFICATE-----"

# RSASSA-PSS exactly as both sides use it; the salt length is fixed (not "maximum" or "auto")
# so that other implementations can interoperate and verification is strict.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

REQUEST_MEMBERS = frozenset(
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
RESPONSE_MEMBERS = frozenset(
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
MAX_STATUS_BYTES = 8192


class ProtocolError(KMSError):
    """A protocol message is malformed, fails a check, or does not verify.

    `code` is a stable machine-readable string (see the module docstring); `message` is for
    people and never contains key material. ``str()`` is "code: message", as logs expect.
    """

    code = "protocol_error"
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- encodings ---------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(value: object, *, member: str, code: str) -> bytes:
    """Decode standard base64, accepting only its canonical form (padding, no stray bits)."""
    if not isinstance(value, str) or not value.isascii():
        raise ProtocolError(code, f"{member} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(code, f"{member} is not valid base64") from None
    if b64encode(data) != value:
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


def key_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _KEY_NAME_RE.fullmatch(value):
        return f"key_name must be 1-{KEY_NAME_MAX_LENGTH} characters of [a-z0-9_.-]"
    return None


def version_problem(value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and _is_int(value) and 1 <= value <= MAX_VERSION:
        return None
    return f"version must be an integer from 1 to {MAX_VERSION}" + (" or null" if optional else "")


def pem_problem(value: object, *, member: str) -> str | None:
    if (
        not isinstance(value, str)
        or not value.isascii()
        or len(value) > _MAX_PEM_CHARS
        or _PEM_CERTIFICATE_MARKER not in value
    ):
        return f"{member} must be a PEM certificate (ASCII, at most {_MAX_PEM_CHARS} chars)"
    return None


def client_name_problem(value: object) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= _CLIENT_NAME_MAX_LENGTH:
        return f"client_name must be a string of 1-{_CLIENT_NAME_MAX_LENGTH} characters"
    try:
        value.encode("utf-8")  # lone surrogates from JSON cannot be hashed or put in the AAD
    except UnicodeEncodeError:
        return "client_name is not valid Unicode"
    return None


def chain_problem(value: object) -> str | None:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= _MAX_CHAIN_LENGTH:
        return f"server_certificate_chain must list 1-{_MAX_CHAIN_LENGTH} PEM certificates"
    for pem in value:
        problem = pem_problem(pem, member="server_certificate_chain entry")
        if problem is not None:
            return problem
    return None


def require(problem: str | None, code: str) -> None:
    if problem is not None:
        raise ProtocolError(code, problem)


def check_members(obj: object, expected: frozenset[str], *, kind: str, code: str) -> dict[str, Any]:
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


def decode_signature(value: object, *, code: str) -> bytes:
    signature = b64decode(value, member="signature", code=code)
    if not 1 <= len(signature) <= _MAX_SIGNATURE_BYTES:
        raise ProtocolError(code, "signature has an impossible length")
    return signature


# --- signatures --------------------------------------------------------------------------


def signature_key_problem(key: object, *, private: bool) -> str | None:
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
    problem = signature_key_problem(private_key, private=True)
    if problem is not None:
        raise TypeError(problem)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, _PSS, hashes.SHA256())
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True if `signature` over `data` verifies under `public_key` (see `sign`).

    TypeError for unsupported key types (a caller bug, not a bad signature).
    """
    problem = signature_key_problem(public_key, private=False)
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
