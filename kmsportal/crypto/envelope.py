"""Sealing secrets under the master keyring (AES-256-GCM, self-describing blobs).

Sealed blob format, version 1::

    +------+-----+-------------+-----------+---------------------------+
    | 0x01 |  L  | key id (L)  | nonce(12) | ciphertext || tag (16)   |
    +------+-----+-------------+-----------+---------------------------+
     \\_________ header ________/

* ``0x01`` is the format version; any other value is rejected as an unknown format.
* ``L`` is the length of the key id, 1-32; the key id is ASCII ``[A-Za-z0-9_.-]``.
* the nonce is 96 bits, fresh from ``os.urandom`` for every seal.
* ciphertext is the same length as the plaintext, followed by the 128-bit GCM tag.

What the GCM authentication covers:

* the **header** (version byte, length byte, key id) is prepended to the associated data,
  so changing the version or relabelling the blob with a different key id fails
  authentication (or is rejected earlier as an unknown format / unknown key);
* the **caller's AAD** follows the header. Callers pass an identifier of the row that owns
  the blob, e.g. ``b"vault.KeyVersion:<uuid>:1"``, so a blob copied into another row (or
  another field) fails to unseal. The header is self-delimiting (its length byte fixes
  where it ends), so ``header || aad`` is an unambiguous encoding of the pair;
* the **nonce** is not in the associated data and does not need to be: GCM derives its
  counter blocks and tag mask from the nonce, so a modified nonce fails the tag check;
* the **ciphertext and tag** are authenticated by GCM itself.

Error messages never contain plaintext, key bytes or the associated data.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from kmsportal.crypto.kek import (
    DEFAULT_KEYRING_SOURCE,
    KEY_ID_MAX_LENGTH,
    NONCE_SIZE,
    MasterKeyProvider,
    UnknownMasterKeyError,
    is_valid_key_id,
)

from .errors import KMSError

__all__ = [
    "FORMAT_VERSION",
    "TAG_SIZE",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeIntegrityError",
    "EnvelopeUnknownKeyError",
    "Keyring",
]

#: Current (and only) sealed blob format version.
FORMAT_VERSION = 1

#: AES-GCM authentication tag size in bytes (full 128-bit tag; never truncated).
TAG_SIZE = 16

_VERSION_BYTE = bytes([FORMAT_VERSION])

#: Shortest possible blob: version, length, 1-char key id, nonce, tag (empty plaintext).
_MIN_BLOB_SIZE = 2 + 1 + NONCE_SIZE + TAG_SIZE


class EnvelopeError(KMSError):
    """Base class for all errors raised when sealing or unsealing a blob."""

    code = "sealed_blob_invalid"
    status = 500


class EnvelopeFormatError(EnvelopeError):
    """The blob is not a well-formed sealed blob (empty, truncated, unknown version, ...)."""


class EnvelopeIntegrityError(EnvelopeError):
    """Authentication failed: the blob was modified, or the associated data is wrong."""

    def __init__(self) -> None:
        super().__init__("sealed blob failed integrity check (tampered, or wrong associated data)")


class EnvelopeUnknownKeyError(EnvelopeError, UnknownMasterKeyError):
    """The blob names a master key that is not in the keyring.

    Also an :class:`~kmsportal.crypto.kek.UnknownMasterKeyError`, so callers may catch either.

    Attributes:
        key_id: the key id found in the blob header.
        source: where the keyring was configured.
    """

    def __init__(self, key_id: str, source: str = DEFAULT_KEYRING_SOURCE) -> None:
        UnknownMasterKeyError.__init__(self, key_id, source)
        self.args = (
            f"sealed blob uses master key {key_id!r}, which is not in the keyring ({source})",
        )


class Keyring:
    """Seals and unseals byte strings under a :class:`MasterKeyProvider`.

    New blobs are always sealed under the provider's primary key; blobs sealed under any key
    in the ring can be unsealed. Rotation: put a new key first in the keyring, then
    :meth:`rewrap` every blob for which :meth:`needs_rewrap` is true, then retire the old key.

    Nonce invariant: every seal draws a fresh 96-bit nonce from ``os.urandom``. Random
    nonces collide with probability about ``n**2 / 2**97`` after ``n`` seals under one key;
    NIST SP 800-38D caps random-nonce use at 2**32 seals per key, where that probability is
    still below 2**-32. Rotate the primary key well before a key has sealed ~2**32 blobs
    (a collision would leak the XOR of two plaintexts and enable forgeries under that key).
    """

    def __init__(self, provider: MasterKeyProvider) -> None:
        """Wrap ``provider``; all cryptographic operations are delegated to it."""
        if not isinstance(provider, MasterKeyProvider):
            raise TypeError(f"provider must be a MasterKeyProvider, not {type(provider).__name__}")
        self._provider = provider

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key_ids={self.key_ids!r}>"

    @property
    def provider(self) -> MasterKeyProvider:
        """The underlying master key provider."""
        return self._provider

    @property
    def primary_key_id(self) -> str:
        """Id of the key new blobs are sealed under."""
        return self._provider.primary_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of all keys that can unseal, primary first."""
        return self._provider.key_ids

    def key_check_values(self) -> dict[str, str]:
        """Return ``{key_id: key check value}`` for every key, primary first."""
        return {key_id: self._provider.key_check_value(key_id) for key_id in self.key_ids}

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` under the primary key; return a self-describing sealed blob.

        Args:
            plaintext: the secret to seal (may be empty).
            aad: associated data binding the blob to its owner, e.g.
                ``b"vault.KeyVersion:<uuid>:1"``. The same value must be given to
                :meth:`unseal`. It is authenticated, not encrypted, and not stored in the blob.

        Raises:
            TypeError: ``plaintext`` or ``aad`` is not ``bytes``.
            EnvelopeUnknownKeyError: the provider does not know its own primary key.
        """
        _require_bytes("plaintext", plaintext)
        _require_bytes("aad", aad)
        key_id = self._provider.primary_key_id
        header = _encode_header(key_id)
        # Nonce uniqueness: a fresh random 96-bit nonce per seal, never derived or reused.
        nonce = os.urandom(NONCE_SIZE)
        try:
            # AAD = header || caller's aad (see module docstring for what this covers).
            sealed = self._provider.encrypt(key_id, nonce, plaintext, header + aad)
        except EnvelopeUnknownKeyError:
            raise
        except UnknownMasterKeyError as exc:
            raise EnvelopeUnknownKeyError(exc.key_id, exc.source) from None
        return header + nonce + sealed

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt a sealed blob; return the plaintext.

        ``blob`` may also be a ``bytearray`` or ``memoryview`` (as some database drivers
        return binary columns).

        Raises:
            TypeError: ``blob`` is not bytes-like or ``aad`` is not ``bytes``.
            EnvelopeFormatError: the blob is empty, truncated or of an unknown format.
            EnvelopeUnknownKeyError: the blob names a key that is not in the keyring.
            EnvelopeIntegrityError: the blob was modified or ``aad`` is wrong.
        """
        _require_bytes("aad", aad)
        header, key_id, nonce, sealed = _parse_blob(blob)
        try:
            return self._provider.decrypt(key_id, nonce, sealed, header + aad)
        except InvalidTag:
            raise EnvelopeIntegrityError() from None
        except EnvelopeUnknownKeyError:
            raise
        except UnknownMasterKeyError as exc:
            raise EnvelopeUnknownKeyError(exc.key_id, exc.source) from None

    def blob_key_id(self, blob: bytes) -> str:
        """Return the id of the key ``blob`` was sealed under, from the header alone.

        This does not authenticate the blob (nothing is decrypted); use it to select blobs
        for rotation, not to make trust decisions.

        Raises:
            TypeError: ``blob`` is not bytes-like.
            EnvelopeFormatError: the blob is empty, truncated or of an unknown format.
        """
        return _parse_blob(blob)[1]

    def needs_rewrap(self, blob: bytes) -> bool:
        """Return whether ``blob`` is sealed under a key other than the current primary.

        Raises:
            TypeError: ``blob`` is not bytes-like.
            EnvelopeFormatError: the blob is empty, truncated or of an unknown format.
        """
        return self.blob_key_id(blob) != self.primary_key_id

    def rewrap(self, blob: bytes, aad: bytes) -> bytes:
        """Unseal ``blob`` and seal its plaintext again under the primary key (fresh nonce).

        The same ``aad`` is used for both, so the blob stays bound to the same owner. The
        plaintext exists only transiently in memory.

        Raises:
            Same as :meth:`unseal`.
        """
        return self.seal(self.unseal(blob, aad), aad)


def _require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _encode_header(key_id: str) -> bytes:
    """Return version || len(key_id) || key_id for a valid key id."""
    if not is_valid_key_id(key_id):
        # Only reachable with a misbehaving provider; the id is not echoed in case it is junk.
        raise ValueError(
            f"master key id must be 1-{KEY_ID_MAX_LENGTH} characters of [A-Za-z0-9_.-]"
        )
    encoded = key_id.encode("ascii")
    return _VERSION_BYTE + bytes([len(encoded)]) + encoded


def _parse_blob(blob: bytes | bytearray | memoryview) -> tuple[bytes, str, bytes, bytes]:
    """Split a sealed blob into (header, key id, nonce, ciphertext||tag); structure only.

    Raises:
        TypeError: ``blob`` is not bytes-like.
        EnvelopeFormatError: the structure is invalid. Messages describe sizes and header
            fields only, never blob contents beyond a validated key id.
    """
    if isinstance(blob, (bytearray, memoryview)):
        blob = bytes(blob)
    elif not isinstance(blob, bytes):
        raise TypeError(f"sealed blob must be bytes, not {type(blob).__name__}")
    if not blob:
        raise EnvelopeFormatError("sealed blob is empty")
    if blob[0] != FORMAT_VERSION:
        raise EnvelopeFormatError(
            f"unknown sealed blob format version {blob[0]} (expected {FORMAT_VERSION})"
        )
    if len(blob) < _MIN_BLOB_SIZE:
        raise EnvelopeFormatError(
            f"sealed blob is truncated ({len(blob)} bytes, need at least {_MIN_BLOB_SIZE})"
        )
    key_id_length = blob[1]
    if not 1 <= key_id_length <= KEY_ID_MAX_LENGTH:
        raise EnvelopeFormatError(
            f"sealed blob has a bad key id length {key_id_length} (expected 1-{KEY_ID_MAX_LENGTH})"
        )
    header_end = 2 + key_id_length
    nonce_end = header_end + NONCE_SIZE
    if len(blob) < nonce_end + TAG_SIZE:
        raise EnvelopeFormatError(
            f"sealed blob is truncated ({len(blob)} bytes, need at least {nonce_end + TAG_SIZE})"
        )
    try:
        key_id = blob[2:header_end].decode("ascii")
    except UnicodeDecodeError:
        key_id = ""
    if not is_valid_key_id(key_id):
        # Not echoed: the bytes are unvalidated and could contain control characters.
        raise EnvelopeFormatError("sealed blob has an invalid key id in its header")
    return blob[:header_end], key_id, blob[header_end:nonce_end], blob[nonce_end:]
