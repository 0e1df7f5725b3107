"""Ephemeral Diffie-Hellman for the key distribution protocol, and HKDF-SHA256.

Two groups are offered, named as on the wire:

* ``x25519`` (default): RFC 7748 X25519. Public keys and shared secrets are the raw 32 bytes.
* ``ffdhe3072``: the RFC 7919 3072-bit finite-field group (Appendix A.2, generator 2). Public
  values and shared secrets are big-endian integers left-padded with zeros to 384 bytes (the
  byte length of p), so their length never leaks anything and both sides agree on the bytes.

Security invariants:

* Every key pair is **ephemeral**: generated fresh for one exchange (never cached, never
  serialised) and dropped after it, which is what gives the protocol forward secrecy.
* Group parameters are **fixed constants**; nothing here generates DH parameters at run time,
  and a peer cannot choose them (the group is named, never transmitted as numbers).
* **Peer public values are validated** before use. X25519: exactly 32 bytes, and an all-zero
  shared secret (a low-order peer point, RFC 7748 §6.1) is refused. ffdhe3072: exactly 384
  bytes, 2 <= y <= p-2 (RFC 7919 §5.1), which excludes the elements of order 1 and 2, and
  y in the prime-order subgroup (y^q = 1 mod p, q = (p-1)/2; RFC 7919 §5.1's optional
  check), so not even the parity of the private exponent can leak; a shared secret of 1 or
  p-1 is refused as well (defence in depth).
* All arithmetic goes through ``cryptography`` (OpenSSL); no primitive is implemented here.

cryptography 50 marks finite-field DH as deprecated (it warns when the ``dh`` module's names are
accessed). ffdhe3072 is part of the protocol, so the names are fetched once at import with that
one warning silenced; if a future cryptography removes FFDH, importing this module fails loudly
rather than quietly dropping the group.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.utils import CryptographyDeprecationWarning

from .errors import KMSError

with warnings.catch_warnings():
    # Import-time only (single-threaded under the import lock), and only this warning class.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dh import (
        DHParameterNumbers,
        DHPublicNumbers,
    )

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.dh import DHParameters, DHPrivateKey

__all__ = [
    "FFDHE3072",
    "FFDHE3072_BYTES",
    "FFDHE3072_G",
    "FFDHE3072_P",
    "GROUPS",
    "X25519",
    "X25519_BYTES",
    "DHError",
    "EphemeralKeyPair",
    "generate_ephemeral",
    "hkdf_sha256",
    "public_key_length",
]

#: Group names as they appear in protocol messages.
X25519 = "x25519"
FFDHE3072 = "ffdhe3072"

#: Supported groups, the default first.
GROUPS: tuple[str, ...] = (X25519, FFDHE3072)

#: X25519 public key and shared secret size in bytes.
X25519_BYTES = 32

#: RFC 7919 Appendix A.2 ffdhe3072 prime p, a safe prime: p = 2^3072 - 2^3008 +
#: (floor(2^2942 * e) + 2625351) * 2^64 - 1. Copied from the RFC; the tests recompute it from
#: that formula.
FFDHE3072_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1"
    "D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD6561"
    "2433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
    "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB19"
    "0B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD73"
    "3BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C0238"
    "61B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD3"
    "64F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D"
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF"
    "3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    16,
)

#: RFC 7919 ffdhe3072 generator.
FFDHE3072_G = 2

#: Byte length of the ffdhe3072 prime: the size of public values and shared secrets on the wire.
FFDHE3072_BYTES = 384

_FFDHE3072_NUMBERS = DHParameterNumbers(FFDHE3072_P, FFDHE3072_G)

_PUBLIC_KEY_BYTES = {X25519: X25519_BYTES, FFDHE3072: FFDHE3072_BYTES}


class DHError(KMSError, ValueError):
    """A key exchange cannot proceed: unknown group, or an invalid peer public value."""

    code = "key_exchange_failed"
    status = 400


def public_key_length(group: str) -> int:
    """The exact byte length of a public key in `group`; DHError for an unknown group."""
    try:
        return _PUBLIC_KEY_BYTES[group]
    except KeyError:
        raise DHError(f"unknown DH group {group!r}") from None


@functools.cache
def _ffdhe3072_parameters() -> DHParameters:
    """The fixed RFC 7919 group as a `cryptography` object (built once, never generated)."""
    return _FFDHE3072_NUMBERS.parameters()


class EphemeralKeyPair:
    """A one-exchange key pair in one of `GROUPS`.

    Create it with `generate_ephemeral`. The private half never leaves this object: there is no
    accessor and no serialisation. Call `discard` (or just drop the object) once the exchange
    is done; Python cannot wipe memory, so forward secrecy rests on not keeping references.
    """

    __slots__ = ("_group", "_private")

    def __init__(self, group: str, private: x25519.X25519PrivateKey | DHPrivateKey) -> None:
        self._group = group
        self._private: x25519.X25519PrivateKey | DHPrivateKey | None = private

    def __repr__(self) -> str:
        state = "discarded" if self._private is None else "live"
        return f"<EphemeralKeyPair {self._group} {state}>"

    @classmethod
    def from_private_bytes(cls, group: str, data: bytes) -> EphemeralKeyPair:
        """Load a fixed X25519 private key, for known-answer tests only.

        Protocol code must always use `generate_ephemeral`: a reused "ephemeral" key destroys
        forward secrecy. Only x25519 is supported.
        """
        if group != X25519:
            raise DHError(f"from_private_bytes supports only {X25519!r}, not {group!r}")
        if len(data) != X25519_BYTES:
            raise DHError(f"an X25519 private key is {X25519_BYTES} bytes, got {len(data)}")
        return cls(group, x25519.X25519PrivateKey.from_private_bytes(data))

    @property
    def group(self) -> str:
        """The group name, as on the wire."""
        return self._group

    def _live_private(self) -> x25519.X25519PrivateKey | DHPrivateKey:
        if self._private is None:
            raise DHError("this ephemeral key pair has been discarded")
        return self._private

    def public_bytes(self) -> bytes:
        """The public key in wire form: 32 raw bytes (x25519) or 384 big-endian bytes."""
        private = self._live_private()
        if isinstance(private, x25519.X25519PrivateKey):
            return private.public_key().public_bytes_raw()
        y = private.public_key().public_numbers().y
        return y.to_bytes(FFDHE3072_BYTES, "big")

    def exchange(self, peer_public: bytes) -> bytes:
        """The shared secret with `peer_public` (wire form), after validating the peer value.

        Raises DHError for a wrong length, an out-of-range ffdhe3072 value, or a degenerate
        shared secret; whatever `cryptography` raises for a bad peer key becomes DHError too.
        The raw secret must only ever be fed to a KDF, never used as a key directly.
        """
        private = self._live_private()
        if not isinstance(peer_public, bytes):
            raise DHError("peer public key must be bytes")
        expected = _PUBLIC_KEY_BYTES[self._group]
        if len(peer_public) != expected:
            raise DHError(
                f"{self._group} peer public key must be {expected} bytes, got {len(peer_public)}"
            )
        if isinstance(private, x25519.X25519PrivateKey):
            return _x25519_exchange(private, peer_public)
        return _ffdhe3072_exchange(private, peer_public)

    def discard(self) -> None:
        """Drop the private key so that it can be garbage-collected (forward secrecy)."""
        self._private = None


def _x25519_exchange(private: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
        shared = private.exchange(peer)
    except ValueError:
        # OpenSSL refuses an all-zero result itself ("Error computing shared key"); report it
        # the same way as our own check below, whichever layer catches it.
        raise DHError("X25519 produced an all-zero shared secret (low-order peer key)") from None
    # RFC 7748 §6.1: an all-zero output means the peer sent a low-order point, so the secret
    # is known to anyone. Constant-time comparison is unnecessary: the result is refused.
    if shared == bytes(X25519_BYTES):
        raise DHError("X25519 produced an all-zero shared secret (low-order peer key)")
    return shared


def _jacobi(a: int, n: int) -> int:
    """The Jacobi symbol (a/n) for odd n > 0: binary algorithm (quadratic reciprocity)."""
    a %= n
    result = 1
    while a:
        twos = (a & -a).bit_length() - 1
        a >>= twos
        if twos & 1 and n % 8 in (3, 5):
            result = -result
        if a % 4 == 3 and n % 4 == 3:
            result = -result
        a, n = n % a, a
    return result if n == 1 else 0


def _ffdhe3072_exchange(private: DHPrivateKey, peer_public: bytes) -> bytes:
    y = int.from_bytes(peer_public, "big")
    # RFC 7919 §5.1: 1 < y < p-1. With p a safe prime this leaves only elements of order q or
    # 2q (q = (p-1)/2), so no small-subgroup confinement of the shared secret is possible.
    if not 2 <= y <= FFDHE3072_P - 2:
        raise DHError("peer public value outside [2, p-2]")
    # And y must lie in the subgroup of prime order q (y^q = 1 mod p). For a safe prime
    # that subgroup is exactly the quadratic residues, so the Legendre symbol (y/p) = 1
    # decides it: microseconds, where the modular exponentiation in Python takes ~60 ms.
    # OpenSSL does not make this check on a DH peer key.
    if _jacobi(y, FFDHE3072_P) != 1:
        raise DHError("peer public value is not in the prime-order subgroup (y^q != 1 mod p)")
    try:
        peer = DHPublicNumbers(y, _FFDHE3072_NUMBERS).public_key()
        shared = private.exchange(peer)
    except ValueError as exc:
        raise DHError(f"ffdhe3072 key exchange failed: {exc}") from None
    value = int.from_bytes(shared, "big")
    if value <= 1 or value == FFDHE3072_P - 1:
        raise DHError("ffdhe3072 produced a degenerate shared secret")
    # cryptography already pads to len(p); pad again so the invariant never depends on that.
    return value.to_bytes(FFDHE3072_BYTES, "big")


def generate_ephemeral(group: str = X25519) -> EphemeralKeyPair:
    """A fresh key pair in `group` from the OS CSPRNG (via OpenSSL); DHError if unknown."""
    if group == X25519:
        return EphemeralKeyPair(group, x25519.X25519PrivateKey.generate())
    if group == FFDHE3072:
        return EphemeralKeyPair(group, _ffdhe3072_parameters().generate_private_key())
    raise DHError(f"unknown DH group {group!r}")


def hkdf_sha256(*, secret: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract with `salt`, expand with `info` to `length` bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)
