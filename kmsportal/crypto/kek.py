"""Master keyring: the key-encryption keys (KEKs) that seal everything else.

A keyring is an ordered set of named AES-256 keys. The first key is the *primary*: it seals
all new data. Every key in the ring can unseal, so a key can be rotated by putting a new key
first and rewrapping existing blobs at leisure (see :mod:`kmsportal.crypto.envelope`).

Keys come from a :class:`MasterKeyProvider`. :class:`StaticKeyProvider` holds keys in process
memory (from the ``KMS_MASTER_KEYS`` environment variable or a development keyring file). The
interface never asks a provider to export key bytes, so an HSM-backed provider can implement
it by delegating ``encrypt``/``decrypt``/``key_check_value`` to the device.

Keyring spec format (environment variable and keyring file)::

    id2:base64key,id1:base64key

* entries are separated by ``,``; whitespace around entries is ignored;
* a key id is 1-32 characters of ``[A-Za-z0-9_.-]``;
* a key is standard base64 (strictly validated) of exactly 32 bytes;
* the first entry is the primary (sealing) key; all entries can unseal.

Security invariant for every error message in this module: it may name a key id, an entry
position or a file path, but it never contains key bytes or their base64 encoding.
"""

from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KMSError

__all__ = [
    "KEY_CHECK_VALUE_LABEL",
    "KEY_ID_MAX_LENGTH",
    "KEY_SIZE",
    "NONCE_SIZE",
    "KeyringConfigError",
    "MasterKeyProvider",
    "StaticKeyProvider",
    "UnknownMasterKeyError",
    "generate_dev_keyring_spec",
    "is_valid_key_id",
    "parse_master_keys",
    "write_keyring_file",
]

#: Master keys are AES-256 keys.
KEY_SIZE = 32

#: AES-GCM nonce size used with master keys (96 bits, the size GCM is designed for).
NONCE_SIZE = 12

#: Longest allowed key id. Key ids are stored in every sealed blob behind a one-byte length.
KEY_ID_MAX_LENGTH = 32

#: Fixed message MACed with a master key to derive its key check value.
KEY_CHECK_VALUE_LABEL = b"kmsportal master key check value v1"

#: Default name used in messages for a keyring that came from the environment.
DEFAULT_KEYRING_SOURCE = "KMS_MASTER_KEYS"

_KEY_ID_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{KEY_ID_MAX_LENGTH}}}")
_KEY_ID_RULE = f"1-{KEY_ID_MAX_LENGTH} characters of [A-Za-z0-9_.-]"
_KEY_CHECK_VALUE_BYTES = 8


class KeyringConfigError(KMSError, ValueError):
    """The master keyring configuration is invalid.

    The message names the problem and, where relevant, the key id, entry position or file.
    It never contains key material.
    """

    code = "keyring_config_invalid"
    status = 500


class UnknownMasterKeyError(KMSError, LookupError):
    """A master key id was requested that is not in the keyring.

    Attributes:
        key_id: the requested key id.
        source: where the keyring was configured (e.g. ``KMS_MASTER_KEYS`` or a file path).
    """

    code = "unknown_master_key"
    status = 500

    def __init__(self, key_id: str, source: str = DEFAULT_KEYRING_SOURCE) -> None:
        self.key_id = key_id
        self.source = source
        super().__init__(f"master key {key_id!r} is not in the keyring ({source})")


def is_valid_key_id(key_id: str) -> bool:
    """Return whether ``key_id`` is 1-32 characters of ``[A-Za-z0-9_.-]``.

    The restricted alphabet keeps key ids safe to echo in logs and error messages, and
    guarantees they are ASCII so they fit the sealed-blob header unambiguously.
    """
    return isinstance(key_id, str) and _KEY_ID_RE.fullmatch(key_id) is not None


def parse_master_keys(
    spec: str, *, source: str = DEFAULT_KEYRING_SOURCE
) -> list[tuple[str, bytes]]:
    """Parse a keyring spec ``"id2:base64key,id1:base64key"`` into ``[(key_id, key), ...]``.

    The returned order is the spec order: the first entry is the primary (sealing) key.

    Args:
        spec: the keyring spec string.
        source: name of where the spec came from, used as the prefix of error messages.

    Raises:
        KeyringConfigError: the spec is empty or any entry is malformed (empty entry, missing
            ``:``, empty or invalid key id, key that is not strict base64, key that is not
            exactly 32 bytes, duplicate key id).
        TypeError: ``spec`` is not a ``str``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"{source}: keyring spec must be str, not {type(spec).__name__}")
    if not spec.strip():
        raise KeyringConfigError(f"{source} is empty")

    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for position, raw_entry in enumerate(spec.split(","), start=1):
        entry = raw_entry.strip()
        if not entry:
            raise KeyringConfigError(f"{source}: entry {position} is empty")
        key_id, separator, encoded_key = entry.partition(":")
        if not separator:
            # Do not echo the entry: without a separator it may well be a bare key.
            raise KeyringConfigError(
                f"{source}: entry {position} has no ':' separator (expected key_id:base64key)"
            )
        key_id = key_id.strip()
        encoded_key = encoded_key.strip()
        if not key_id:
            raise KeyringConfigError(f"{source}: entry {position} has an empty key id")
        if not is_valid_key_id(key_id):
            # The invalid id is deliberately not echoed: a swapped "key:id" entry would put
            # base64 key material in the id position.
            raise KeyringConfigError(
                f"{source}: entry {position} has an invalid key id (must be {_KEY_ID_RULE})"
            )
        if key_id in seen:
            raise KeyringConfigError(f"{source}: duplicate key id {key_id!r}")
        seen.add(key_id)
        keys.append((key_id, _decode_key(encoded_key, key_id, source)))
    return keys


def _decode_key(encoded_key: str, key_id: str, source: str) -> bytes:
    """Strictly base64-decode one key and check its length; errors never include the key."""
    if not encoded_key:
        raise KeyringConfigError(f"{source}: key {key_id!r} is empty")
    try:
        key = base64.b64decode(encoded_key, validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the underlying exception is not needed and must not drag key
        # material into tracebacks.
        raise KeyringConfigError(f"{source}: key {key_id!r} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise KeyringConfigError(
            f"{source}: key {key_id!r} is {len(key)} bytes, expected {KEY_SIZE}"
        )
    return key


def _key_check_value(key: bytes) -> str:
    """HMAC-SHA256(key, KEY_CHECK_VALUE_LABEL), truncated to 8 bytes, as 16 hex characters.

    A key check value (KCV) lets operators confirm that two deployments hold the same key,
    or that a key was entered correctly, without revealing the key. An HMAC output is a PRF
    value: it reveals nothing about the key beyond "same key, same KCV". The classic KCV
    (AES-ECB of a zero block, first 3 bytes) is also acceptable, but it publishes a known
    plaintext/ciphertext pair under the live key; the HMAC construction avoids even that.
    64 bits is enough to tell keys apart; it is not meant to resist a brute-force search
    (the 256-bit key does that).
    """
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(KEY_CHECK_VALUE_LABEL)
    return mac.finalize()[:_KEY_CHECK_VALUE_BYTES].hex()


class MasterKeyProvider(abc.ABC):
    """Backend holding the master keys and performing AES-256-GCM with them.

    Implementations never need to export key bytes: callers only ask for encryption,
    decryption and key check values by key id, so keys may live in an HSM or a cloud KMS.

    Contract for implementations:

    * ``key_ids`` lists every key that can unseal, primary first; ``primary_key_id`` is
      ``key_ids[0]`` and is the only key new data is sealed under.
    * ``encrypt``/``decrypt`` are plain AES-256-GCM with a 96-bit nonce and a 128-bit tag.
      The *caller* is responsible for nonce uniqueness per key (see the envelope module);
      providers must use the nonce they are given and must not reuse state between calls.
    * Unknown key ids raise :class:`UnknownMasterKeyError`.
    * Authentication failure in ``decrypt`` raises ``cryptography.exceptions.InvalidTag``.
    """

    @property
    @abc.abstractmethod
    def primary_key_id(self) -> str:
        """Id of the key that seals new data."""

    @property
    @abc.abstractmethod
    def key_ids(self) -> tuple[str, ...]:
        """Ids of all keys that can unseal, primary first."""

    @abc.abstractmethod
    def encrypt(self, key_id: str, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM encrypt under ``key_id``; return ciphertext followed by the 16-byte tag.

        The caller must never pass the same ``nonce`` twice for the same ``key_id``: GCM
        nonce reuse reveals the XOR of plaintexts and lets an attacker forge tags.

        Raises:
            UnknownMasterKeyError: ``key_id`` is not in the keyring.
        """

    @abc.abstractmethod
    def decrypt(
        self, key_id: str, nonce: bytes, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        """AES-256-GCM decrypt ``ciphertext`` (ciphertext followed by tag) under ``key_id``.

        Raises:
            UnknownMasterKeyError: ``key_id`` is not in the keyring.
            cryptography.exceptions.InvalidTag: authentication failed (wrong key, nonce,
                associated data, or modified ciphertext/tag).
        """

    @abc.abstractmethod
    def key_check_value(self, key_id: str) -> str:
        """Return the key check value of ``key_id`` (16 hex characters; reveals no key bits).

        Raises:
            UnknownMasterKeyError: ``key_id`` is not in the keyring.
        """


class StaticKeyProvider(MasterKeyProvider):
    """Master keys held in process memory (environment variable or development file).

    One ``AESGCM`` object is built per key at construction time and reused for every
    operation (roughly 300k ops/s reused versus 170k ops/s when rebuilt per call). ``AESGCM``
    objects are immutable, so sharing them between threads is safe. The raw key bytes are
    not kept as attributes after construction; only the ``AESGCM`` objects and the
    precomputed key check values are.
    """

    def __init__(
        self, keys: Iterable[tuple[str, bytes]], *, source: str = DEFAULT_KEYRING_SOURCE
    ) -> None:
        """Build a provider from ``[(key_id, key), ...]``; the first entry is the primary.

        Raises:
            KeyringConfigError: no keys, an invalid or duplicate key id, or a key that is
                not exactly 32 bytes.
        """
        self._source = source
        ciphers: dict[str, AESGCM] = {}
        check_values: dict[str, str] = {}
        for position, (key_id, key) in enumerate(keys, start=1):
            if not is_valid_key_id(key_id):
                raise KeyringConfigError(
                    f"{source}: entry {position} has an invalid key id (must be {_KEY_ID_RULE})"
                )
            if key_id in ciphers:
                raise KeyringConfigError(f"{source}: duplicate key id {key_id!r}")
            if not isinstance(key, bytes):
                raise KeyringConfigError(f"{source}: key {key_id!r} must be bytes")
            if len(key) != KEY_SIZE:
                raise KeyringConfigError(
                    f"{source}: key {key_id!r} is {len(key)} bytes, expected {KEY_SIZE}"
                )
            ciphers[key_id] = AESGCM(key)
            check_values[key_id] = _key_check_value(key)
        if not ciphers:
            raise KeyringConfigError(f"{source} is empty")
        # dicts preserve insertion order, so the first key is the primary.
        self._ciphers = ciphers
        self._check_values = check_values
        self._key_ids = tuple(ciphers)

    @classmethod
    def from_spec(cls, spec: str, *, source: str = DEFAULT_KEYRING_SOURCE) -> StaticKeyProvider:
        """Build a provider from a spec string such as the ``KMS_MASTER_KEYS`` variable.

        Raises:
            KeyringConfigError: the spec is malformed (see :func:`parse_master_keys`).
        """
        return cls(parse_master_keys(spec, source=source), source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> StaticKeyProvider:
        """Build a provider from a keyring file containing a spec (trailing newline allowed).

        Raises:
            KeyringConfigError: the file content is malformed; the message names the file.
            OSError: the file cannot be read (e.g. ``FileNotFoundError``).
        """
        path = Path(path)
        source = f"keyring file {str(path)!r}"
        raw = path.read_bytes()
        try:
            spec = raw.decode("ascii")
        except UnicodeDecodeError:
            raise KeyringConfigError(f"{source} is not ASCII text") from None
        return cls.from_spec(spec, source=source)

    def __repr__(self) -> str:
        # Key ids only; never key material.
        return f"<{type(self).__name__} source={self._source!r} key_ids={self._key_ids!r}>"

    @property
    def primary_key_id(self) -> str:
        """Id of the key that seals new data (the first key of the spec)."""
        return self._key_ids[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of all keys that can unseal, primary first."""
        return self._key_ids

    def _cipher(self, key_id: str) -> AESGCM:
        try:
            return self._ciphers[key_id]
        except (KeyError, TypeError):
            raise UnknownMasterKeyError(key_id, self._source) from None

    def encrypt(self, key_id: str, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM encrypt under ``key_id``; return ciphertext followed by the 16-byte tag.

        The caller guarantees ``nonce`` is never reused with the same key.
        """
        _check_nonce(nonce)
        return self._cipher(key_id).encrypt(nonce, plaintext, associated_data)

    def decrypt(
        self, key_id: str, nonce: bytes, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        """AES-256-GCM decrypt under ``key_id``; raises ``InvalidTag`` on any tampering."""
        _check_nonce(nonce)
        return self._cipher(key_id).decrypt(nonce, ciphertext, associated_data)

    def key_check_value(self, key_id: str) -> str:
        """Return the key check value of ``key_id`` (16 hex characters)."""
        try:
            return self._check_values[key_id]
        except (KeyError, TypeError):
            raise UnknownMasterKeyError(key_id, self._source) from None


def _check_nonce(nonce: bytes) -> None:
    # AESGCM accepts other nonce sizes, but only 96-bit nonces use GCM's direct J0 = IV || 0^31 || 1
    # path; the envelope format and its nonce-collision analysis assume exactly 12 bytes.
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"AES-GCM nonce must be {NONCE_SIZE} bytes")


def generate_dev_keyring_spec(key_id: str = "dev1") -> str:
    """Return a spec ``"<key_id>:<base64 key>"`` for a fresh random 32-byte key.

    The key comes from ``os.urandom`` (the OS CSPRNG). Intended for development keyring
    files; production keys should be generated and held by the operator or an HSM.

    Raises:
        KeyringConfigError: ``key_id`` is not a valid key id.
    """
    if not is_valid_key_id(key_id):
        raise KeyringConfigError(f"invalid key id {key_id!r} (must be {_KEY_ID_RULE})")
    key = os.urandom(KEY_SIZE)
    return f"{key_id}:{base64.b64encode(key).decode('ascii')}"


def write_keyring_file(path: str | Path, spec: str) -> None:
    """Write ``spec`` to a new keyring file at ``path`` with mode 0600, atomically.

    The spec is validated first, so a malformed keyring is never written. Missing parent
    directories are created (mode 0700). The content is written to a temporary file in the
    same directory that is created with ``O_CREAT | O_EXCL`` and mode 0600 from the start
    (the key is never on disk with wider permissions), fsynced, and then published under
    the final name.

    Publishing uses ``os.link``, which fails if the target exists, so two processes
    racing to create the same dev keyring cannot overwrite each other's key (an overwrite
    would make data sealed by the loser unrecoverable). On filesystems without hard links
    it falls back to ``os.replace`` after a fresh existence check.

    Raises:
        FileExistsError: ``path`` already exists (it is never overwritten).
        KeyringConfigError: ``spec`` is malformed.
        OSError: the directory or file cannot be created.
    """
    path = Path(path)
    parse_master_keys(spec, source=f"keyring file {str(path)!r}")
    if path.exists() or path.is_symlink():
        raise FileExistsError(errno.EEXIST, "refusing to overwrite keyring file", str(path))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    data = spec.strip().encode("ascii") + b"\n"
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            # The umask can only remove bits; make the mode exactly 0600 regardless.
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish_without_overwrite(temp_path, path)
    finally:
        # After a successful link the temp name is a second link to the same inode; after
        # os.replace it is already gone. Either way, remove any leftover.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
    _fsync_directory(path.parent)


def _publish_without_overwrite(temp_path: Path, path: Path) -> None:
    try:
        os.link(temp_path, path)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite keyring file", str(path)
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links here: best effort, re-check then rename.
        if path.exists() or path.is_symlink():
            raise FileExistsError(
                errno.EEXIST, "refusing to overwrite keyring file", str(path)
            ) from None
        os.replace(temp_path, path)


def _fsync_directory(directory: Path) -> None:
    """Persist the new directory entry (POSIX only; a no-op where unsupported)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
