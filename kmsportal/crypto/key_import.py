"""Bring your own key: the wrapping format of AWS KMS's RSA_AES_KEY_WRAP_SHA_256.

The key owner receives a one-time RSA public key (3072 or 4096 bits) and wraps their key
material for it::

    wrapped = RSA-OAEP(SHA-256, MGF1-SHA-256, no label)(K)  ||  AES-KWP(K, material)

where K is a fresh AES-256 key and AES-KWP is AES key wrap with padding (RFC 5649). The first
part is exactly as long as the RSA modulus, which is how the two are told apart. The RSA key
is used for one import and then destroyed, so a wrapped blob opens once, with the import
token it was made for; a blob made for another token fails the OAEP check.

Every step uses `cryptography`; nothing is hand-rolled. Errors say which part failed and
never contain key bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from .errors import KMSError

__all__ = [
    "IMPORT_KEY_SIZES",
    "ImportUnwrapError",
    "generate_import_key",
    "unwrap_for_import",
    "wrap_for_import",
]

#: RSA sizes offered for the one-time wrapping key (AWS KMS offers the same two and 2048).
IMPORT_KEY_SIZES = (3072, 4096)
_TRANSPORT_KEY_SIZE = 32  # AES-256


class ImportUnwrapError(KMSError, ValueError):
    """The wrapped key material does not open with this import's wrapping key."""

    code = "import_unwrap_failed"
    status = 400


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def generate_import_key(bits: int = 3072) -> rsa.RSAPrivateKey:
    """A fresh one-time RSA wrapping key of ``bits`` (3072 or 4096)."""
    if bits not in IMPORT_KEY_SIZES:
        raise ValueError(f"the wrapping key must be RSA {' or '.join(map(str, IMPORT_KEY_SIZES))}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def wrap_for_import(public_key: rsa.RSAPublicKey, material: bytes) -> bytes:
    """What a key owner does (the CLI, tests): wrap ``material`` for ``public_key``."""
    transport = _random_aes_key()
    return public_key.encrypt(transport, _oaep()) + aes_key_wrap_with_padding(transport, material)


def unwrap_for_import(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Open a blob made by :func:`wrap_for_import` (or the documented OpenSSL commands).

    Raises:
        ImportUnwrapError: the blob is too short, was wrapped for another RSA key (another
            import token), or its AES part was damaged.
    """
    size = private_key.key_size // 8
    if len(wrapped) < size + 16:
        raise ImportUnwrapError(
            f"the wrapped key is {len(wrapped)} bytes; expected the {size}-byte RSA-OAEP "
            "block followed by the AES key wrap (at least 16 bytes)"
        )
    try:
        transport = private_key.decrypt(wrapped[:size], _oaep())
    except ValueError:
        raise ImportUnwrapError(
            "the RSA-OAEP part does not open with this import's wrapping key: the material "
            "was wrapped for another import token (or not with RSA-OAEP SHA-256, "
            "MGF1-SHA-256)"
        ) from None
    if len(transport) != _TRANSPORT_KEY_SIZE:
        raise ImportUnwrapError(
            f"the RSA-OAEP part holds a {len(transport)}-byte key; an AES-256 key is needed"
        )
    try:
        return aes_key_unwrap_with_padding(transport, wrapped[size:])
    except InvalidUnwrap:
        raise ImportUnwrapError(
            "the AES key wrap part fails its integrity check (RFC 5649): it was damaged or "
            "wrapped with another AES key"
        ) from None
    finally:
        del transport


def _random_aes_key() -> bytes:
    import os

    return os.urandom(_TRANSPORT_KEY_SIZE)
