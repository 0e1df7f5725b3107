"""Time-based one-time passwords (RFC 6238) and recovery codes for multi-factor sign-in.

The TOTP parameters are the ones every authenticator app supports: HMAC-SHA-1, 6 digits,
30-second steps, a 160-bit secret (RFC 4226 section 4 recommends 160 bits). The computation
is `cryptography`'s TOTP; this module adds the acceptance window, the provisioning URI and
the recovery codes. Plain Python over bytes: no Django, no storage, no clock except where a
caller leaves `at` out.

Security invariants the callers keep (accounts.mfa):
- a code is accepted for at most one step: the caller stores the step `totp_verify` returns
  and refuses any step at or below it (RFC 6238 section 5.2: no replay within the window);
- recovery codes are stored only as `recovery_code_hash`, and each is used once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

TOTP_DIGITS = 6
TOTP_STEP_SECONDS = 30
TOTP_SECRET_BYTES = 20  # 160 bits
# Accept the previous and the next step too: phone clocks drift and people type slowly.
TOTP_WINDOW_STEPS = 1
TOTP_ISSUER = "kmsportal"

RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_BYTES = 10  # 80 bits: 16 base32 characters, shown as 4 groups of 4
RECOVERY_CODE_GROUP = 4
_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def totp_secret_generate() -> bytes:
    """A fresh TOTP secret: 160 bits from the OS CSPRNG."""
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def totp_secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: base32, upper case, without `=` padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def _totp(secret: bytes) -> TOTP:
    # HMAC-SHA-1, as RFC 6238 and every authenticator app use it: HMAC does not rely on
    # SHA-1's collision resistance, which is what is broken.
    return TOTP(secret, TOTP_DIGITS, SHA1(), TOTP_STEP_SECONDS)  # noqa: S303


def totp_step(at: float | None = None) -> int:
    """The time step (RFC 6238 `T`) that contains the Unix time `at` (now by default)."""
    return int((time.time() if at is None else at) // TOTP_STEP_SECONDS)


def totp_code(secret: bytes, step: int) -> str:
    """The code for one time step, as the user's app shows it (6 digits, leading zeros kept)."""
    if step < 0:
        raise ValueError("a TOTP step cannot be negative")
    return _totp(secret).generate(step * TOTP_STEP_SECONDS).decode("ascii")


def totp_verify(secret: bytes, code: str, *, at: float | None = None) -> int | None:
    """The step whose code `code` is, within ±`TOTP_WINDOW_STEPS` of `at`, or None.

    Every step of the window is compared (in constant time), whatever matched first, so the
    time taken says nothing about which step matched. The caller must refuse a returned step
    that is not greater than the last one it accepted for this secret.
    """
    candidate = code.strip().replace(" ", "").encode("ascii", "replace")
    if len(candidate) != TOTP_DIGITS or not candidate.isdigit():
        return None
    current = totp_step(at)
    matched = None
    for step in range(current - TOTP_WINDOW_STEPS, current + TOTP_WINDOW_STEPS + 1):
        if step < 0:
            continue
        expected = totp_code(secret, step).encode("ascii")
        if hmac.compare_digest(expected, candidate) and matched is None:
            matched = step
    return matched


def totp_provisioning_uri(secret: bytes, *, username: str) -> str:
    """The `otpauth://` URI an authenticator app scans (Google Authenticator key URI format).

    Label `kmsportal:<username>`, issuer `kmsportal`, and the parameters spelled out even
    where they are the defaults, so that every app uses SHA-1, 6 digits and 30 seconds.
    """
    label = f"{quote(TOTP_ISSUER)}:{quote(username)}"
    parameters = urlencode(
        [
            ("secret", totp_secret_base32(secret)),
            ("issuer", TOTP_ISSUER),
            ("algorithm", "SHA1"),
            ("digits", TOTP_DIGITS),
            ("period", TOTP_STEP_SECONDS),
        ]
    )
    return f"otpauth://totp/{label}?{parameters}"


def recovery_codes_generate(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`count` distinct recovery codes of 80 random bits, like `ABCD-EFGH-JKLM-NPQR`."""
    codes: list[str] = []
    while len(codes) < count:
        raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode("ascii")
        code = "-".join(
            raw[i : i + RECOVERY_CODE_GROUP] for i in range(0, len(raw), RECOVERY_CODE_GROUP)
        )
        if code not in codes:
            codes.append(code)
    return codes


def recovery_code_normalise(text: str) -> str | None:
    """The code without hyphens, spaces and case, or None if it cannot be a recovery code."""
    normalised = "".join(text.split()).replace("-", "").upper()
    expected_length = len(base64.b32encode(bytes(RECOVERY_CODE_BYTES)))
    if len(normalised) != expected_length or not set(normalised) <= _BASE32_ALPHABET:
        return None
    return normalised


def recovery_code_hash(code: str) -> str:
    """What is stored for a recovery code: SHA-256 (hex) of its normalised form.

    A plain hash is enough here, unlike for passwords: each code carries 80 bits from the
    CSPRNG, so guessing one from its hash means about 2**80 SHA-256 computations, far beyond
    reach; a slow hash (Argon2) would only protect low-entropy, human-chosen secrets.
    Raises ValueError for text that is not a recovery code.
    """
    normalised = recovery_code_normalise(code)
    if normalised is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(normalised.encode("ascii")).hexdigest()
