"""What every key backend does, and the self-describing payloads they store.

A key backend decides where the keys that protect everything else live (django-ca's key
backends, `STYLE.md` item 14): the master keys that seal (through a
:class:`~kmsportal.crypto.kek.MasterKeyProvider`), the private keys of CAs and delegated OCSP
responders (through a :class:`~kmsportal.crypto.signer.Signer`), and the per-version
wrapping keys that make destruction reach backups.

What a backend hands back to be stored is always sealed again under the master keyring by
`kmsportal.keyring.services` (AAD naming the owner row), so `rewrap`, the sealed-blob counts
and the row binding work the same for every backend. The payloads describe themselves:

* a private key is either PKCS#8 DER (software; DER starts with 0x30) or
  ``b"KR1" || CKA_ID(16)``, a reference to a token object (pkcs11);
* destructible material (key versions; the one-time import keys) is either the raw bytes
  (software: 32 bytes of AES key, or PKCS#8 DER starting with 0x30) or
  ``b"KW1" || CKA_ID(16) || nonce(12) || AES-GCM(wrapping key, material, aad) || tag(16)``,
  sealed by a token-held wrapping key of its own (pkcs11). A wrapped payload is at least
  48 bytes and starts with "KW1", so it is never confused with a 32-byte key or with DER.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.kek import MasterKeyProvider
from kmsportal.crypto.signer import LoadedKeySigner, PrivateKey, PublicKey, Signer
from kmsportal.crypto.x509 import (
    KeyType,
    PrivateKeyError,
    generate_private_key,
    private_key_from_der,
    private_key_to_der,
)

KEY_REFERENCE_PREFIX = b"KR1"
WRAPPED_MATERIAL_PREFIX = b"KW1"
OBJECT_ID_SIZE = 16
_WRAPPED_MATERIAL_MIN_SIZE = 3 + OBJECT_ID_SIZE + 12 + 16 + 1


class KeyBackendError(KMSError):
    """A key backend cannot do what was asked; the message says what and where (never a
    PIN or key bytes)."""

    code = "key_backend_unavailable"
    status = 503


class KeyMaterialDestroyed(KeyBackendError):
    """The wrapping key of this material is gone: the material cannot be recovered."""

    code = "key_material_destroyed"


@dataclass(frozen=True)
class BackendProblem:
    """A start-up problem: check id suffix (E004...), message and hint."""

    id: str
    message: str
    hint: str
    serious: bool = True


@dataclass(frozen=True)
class NewPrivateKey:
    """A private key a backend made or took in: what to seal and store, and its signer."""

    payload: bytes
    signer: Signer

    @property
    def public_key(self) -> PublicKey:
        return self.signer.public_key


def is_key_reference(payload: bytes) -> bool:
    return payload[:3] == KEY_REFERENCE_PREFIX and len(payload) == 3 + OBJECT_ID_SIZE


def is_wrapped_material(payload: bytes) -> bool:
    return payload[:3] == WRAPPED_MATERIAL_PREFIX and len(payload) >= _WRAPPED_MATERIAL_MIN_SIZE


class KeyBackend(abc.ABC):
    """One way of keeping keys. Built once per process from ``KMS_KEY_BACKENDS``."""

    #: "software" or "pkcs11": shown on pages and recorded in audit details.
    name: ClassVar[str]
    #: What destroying a key version reaches with this backend (shown on the key page).
    destruction_guarantee: ClassVar[str]
    #: Whether destroying a version destroys a key object that every copy of it needs.
    destruction_reaches_backups: ClassVar[bool]

    def __init__(self, **options: Any) -> None:
        self.options = options

    # --- master keys -----------------------------------------------------------------------

    @abc.abstractmethod
    def master_key_provider(self, legacy: MasterKeyProvider | None) -> MasterKeyProvider:
        """The provider that seals; ``legacy`` is the software keyring from
        KMS_MASTER_KEYS (required by the software backend; pkcs11 only unseals with it)."""

    def problems(self) -> list[BackendProblem]:
        """What stops this backend from working now (start-up check)."""
        return []

    def prepare(self) -> list[str]:
        """Create what a fresh deployment needs (bootstrap); returns what was done."""
        return []

    # --- key material (vault key versions, one-time import keys) ---------------------------

    def material_wrap(self, material: bytes, *, aad: bytes) -> bytes:
        """The payload that stands for ``material`` (sealed again by the caller)."""
        return material

    def material_unwrap(self, payload: bytes, *, aad: bytes) -> bytes:
        if is_wrapped_material(payload):
            raise KeyBackendError(
                "this key material is wrapped by a key in a PKCS#11 token; set "
                "KMS_KEY_BACKEND=pkcs11 to read it"
            )
        return payload

    def material_destroy(self, payload: bytes) -> bool:
        """Destroy what makes ``payload`` readable; returns whether a key object went.
        The software backend has none: the caller erases the stored blob."""
        return False

    # --- private keys ----------------------------------------------------------------------

    def private_key_generate(self, key_type: KeyType | str) -> NewPrivateKey:
        """A new CA (or OCSP responder) key pair."""
        key = generate_private_key(key_type)
        return self.private_key_store(key)

    def private_key_store(self, private_key: PrivateKey) -> NewPrivateKey:
        """Take in an existing private key (CA import, migration)."""
        return NewPrivateKey(private_key_to_der(private_key), LoadedKeySigner(private_key))

    def private_key_signer(self, payload: bytes, *, what: str) -> Signer:
        """The signer for a stored payload (DER, or a token reference)."""
        if is_key_reference(payload):
            raise KeyBackendError(
                f"the private key of {what} is in a PKCS#11 token; set KMS_KEY_BACKEND=pkcs11"
            )
        try:
            return LoadedKeySigner(private_key_from_der(payload))
        except PrivateKeyError as exc:
            raise KeyBackendError(f"the private key of {what} is unusable: {exc}") from None

    def private_key_destroy(self, payload: bytes) -> bool:
        """Destroy a token-held private key; the software backend has nothing to destroy."""
        return False
