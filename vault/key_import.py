"""Bring your own key (BYOK): import parameters and the import itself.

1. `key_import_parameters_create` makes a one-time RSA-3072/4096 wrapping key valid 24 hours
   and an import token. The private key is sealed by the key backend (`seal_material`: with
   pkcs11 under a token wrapping key of its own); only the token's SHA-256 is stored.
2. The owner wraps AES-256 material as AWS KMS RSA_AES_KEY_WRAP_SHA_256 does
   (`kmsportal.crypto.key_import`, or the OpenSSL commands in docs/key-custody.md).
3. `key_import` opens it with the token's wrapping key and stores it as the key's new
   primary version (or version 1 of a new key), origin "external", with the same key check
   value `key_create` prints. The wrapping key is destroyed in the same transaction.

A blob wrapped for another import token does not open (the RSA-OAEP check fails); the
refusal is audited and the token stays usable until it expires.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.actors import Actor, actor_name
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.key_import import (
    IMPORT_KEY_SIZES,
    ImportUnwrapError,
    generate_import_key,
    unwrap_for_import,
)
from kmsportal.crypto.symmetric import KEY_BYTES
from kmsportal.crypto.x509 import PrivateKeyError, private_key_from_der, private_key_to_der
from kmsportal.keyring.backends import KeyBackendError
from kmsportal.keyring.services import seal_material, sealed_material_destroy, unseal_material

from .events import VaultAction
from .lifecycle import InvalidTransition, KeyAction, next_state
from .models import (
    IMPORT_TOKEN_TTL,
    KEY_NAME_PATTERN,
    KeyImportToken,
    KeyOrigin,
    KeyVersion,
    SymmetricKey,
)
from .services import (
    RESERVED_KEY_NAMES,
    VaultError,
    _locked,
    _primary_replace,
    symmetric_key_create,
)

__all__ = [
    "ImportParameters",
    "KeyImportError",
    "import_token_digest",
    "key_import",
    "key_import_parameters_create",
]

#: The import token: 32 random bytes, URL-safe base64 (43 characters).
IMPORT_TOKEN_BYTES = 32
#: Largest wrapped blob accepted (RSA-4096 block + AES-KWP of 32 bytes is 552).
WRAPPED_MAX_BYTES = 4096


class KeyImportError(VaultError):
    """The import cannot be done as asked; the message says why (never a secret)."""


@dataclass(frozen=True)
class ImportParameters:
    """What the key owner needs; ``token`` is shown or written once, never stored."""

    record: KeyImportToken
    token: str

    @property
    def public_key_pem(self) -> str:
        return self.record.public_key_pem


def import_token_digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def _check_key_name(name: str) -> SymmetricKey | None:
    try:
        RegexValidator(KEY_NAME_PATTERN)(name)
    except ValidationError:
        raise KeyImportError(
            f"{name!r} is not a valid key name: use 1-100 lowercase letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        ) from None
    if name in RESERVED_KEY_NAMES:
        raise KeyImportError(f"{name!r} is a reserved word and cannot name a key")
    key = SymmetricKey.objects.filter(name=name).first()
    if key is not None:
        try:
            next_state(key.state, KeyAction.ROTATE)
        except InvalidTransition:
            raise KeyImportError(
                f"key {name} is {key.get_state_display()}: only an active key takes an "
                "imported version"
            ) from None
    return key


@transaction.atomic
def key_import_parameters_create(
    *, actor: Actor, key_name: str, key_size: int = 3072, now: datetime | None = None
) -> ImportParameters:
    """A one-time wrapping key and import token for importing material into ``key_name``
    (an existing active key gets a new version; a new name becomes a new key)."""
    if key_size not in IMPORT_KEY_SIZES:
        raise KeyImportError(
            f"the wrapping key must be RSA {' or '.join(map(str, IMPORT_KEY_SIZES))}, not {key_size}"
        )
    key = _check_key_name(key_name)
    now = now or timezone.now()
    private_key = generate_import_key(key_size)
    token = secrets.token_urlsafe(IMPORT_TOKEN_BYTES)
    record = KeyImportToken(
        key_name=key_name,
        token_sha256=import_token_digest(token),
        public_key_pem=private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        key_size=key_size,
        created_by=actor,
        created_by_name=actor_name(actor),
        created_at=now,
        expires_at=now + IMPORT_TOKEN_TTL,
    )
    der = private_key_to_der(private_key)
    record.sealed_private_key = seal_material(der, aad=record.aad)
    del der, private_key
    record.save(force_insert=True)
    audit_event_record(
        action=VaultAction.KEY_IMPORT_PARAMETERS_ISSUED,
        actor=actor,
        target=key,
        target_type="" if key else SymmetricKey._meta.label,
        target_label=key_name,
        details={
            "key": key_name,
            "import_id": str(record.pk),
            "wrapping_key": f"RSA-{key_size}",
            "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_256",
            "expires_at": record.expires_at.isoformat(),
            "new_key": key is None,
        },
    )
    return ImportParameters(record, token)


def _refuse(*, actor: Actor, key_name: str, message: str, import_id: str = "") -> KeyImportError:
    """Record a refused import in its own transaction (the caller's is rolled back)."""
    with transaction.atomic():
        audit_event_record(
            action=VaultAction.KEY_IMPORT_REFUSED,
            outcome=Outcome.DENIED,
            actor=actor,
            target_type=SymmetricKey._meta.label,
            target_label=key_name,
            details={"key": key_name, "import_id": import_id, "reason": message},
        )
    return KeyImportError(message)


def key_import(
    *, actor: Actor, key_name: str, wrapped: bytes, import_token: str, now: datetime | None = None
) -> KeyVersion:
    """Import wrapped AES-256 material into ``key_name`` with a one-time import token.

    Returns the new version (origin "external"; its fingerprint is the key check value).
    Refusals (unknown, used or expired token, another key's token, a blob wrapped for
    another token, material that is not 32 bytes) change nothing, are audited, and raise
    KeyImportError.
    """
    try:
        return _key_import(
            actor=actor, key_name=key_name, wrapped=wrapped, import_token=import_token, now=now
        )
    except _Refused as refused:
        raise _refuse(
            actor=actor, key_name=key_name, message=str(refused), import_id=refused.import_id
        ) from None


class _Refused(Exception):
    def __init__(self, message: str, import_id: str = "") -> None:
        super().__init__(message)
        self.import_id = import_id


@transaction.atomic
def _key_import(
    *, actor: Actor, key_name: str, wrapped: bytes, import_token: str, now: datetime | None
) -> KeyVersion:
    now = now or timezone.now()
    if not isinstance(wrapped, bytes) or not wrapped or len(wrapped) > WRAPPED_MAX_BYTES:
        raise _Refused(f"the wrapped key must be 1-{WRAPPED_MAX_BYTES} bytes")
    record = (
        KeyImportToken.objects.select_for_update()
        .filter(token_sha256=import_token_digest(import_token or ""))
        .first()
    )
    if record is None:
        raise _Refused("unknown import token")
    import_id = str(record.pk)
    if record.key_name != key_name:
        raise _Refused(f"this import token is for key {record.key_name}, not {key_name}", import_id)
    if record.used_at is not None:
        raise _Refused(
            f"this import token was used at {record.used_at:%Y-%m-%d %H:%M} UTC; ask for new "
            "import parameters",
            import_id,
        )
    if record.expires_at <= now:
        raise _Refused(
            f"this import token expired at {record.expires_at:%Y-%m-%d %H:%M} UTC; ask for "
            "new import parameters",
            import_id,
        )
    # Cleared only together with used_at (below), which was checked above.
    sealed = record.sealed_private_key
    if sealed is None:
        raise _Refused("this import token was used; ask for new import parameters", import_id)
    try:
        key = _check_key_name(key_name)
    except KeyImportError as exc:
        raise _Refused(str(exc), import_id) from None
    try:
        der = unseal_material(bytes(sealed), aad=record.aad)
        private_key = private_key_from_der(der)
        del der
    except (EnvelopeError, KeyBackendError, PrivateKeyError) as exc:
        raise _Refused(
            f"the wrapping key of this import cannot be opened: {exc}", import_id
        ) from None
    try:
        # An RSA key by construction (generate_import_key, sealed by key_import_parameters_create);
        # private_key_from_der is typed for any key the portal loads.
        material = unwrap_for_import(private_key, wrapped)  # type: ignore[arg-type]
    except ImportUnwrapError as exc:
        raise _Refused(str(exc), import_id) from None
    finally:
        del private_key
    if len(material) != KEY_BYTES:
        raise _Refused(
            f"the imported material is {len(material)} bytes; an AES-256 key is {KEY_BYTES}",
            import_id,
        )
    if key is None:
        key = symmetric_key_create(actor=actor, name=key_name, imported_material=material)
        version = key.versions.get(number=1)
        previous = None
    else:
        key = _locked(key)
        number = (key.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version, previous = _primary_replace(
            key, number=number, now=now, material=material, origin=KeyOrigin.EXTERNAL
        )
        key.last_rotated_at = now
        key.save(update_fields=["last_rotated_at", "updated_at"])
    del material
    # The one-time wrapping key is destroyed with the import (its token object too).
    sealed_material_destroy(bytes(sealed), aad=record.aad)
    record.sealed_private_key = None
    record.used_at = now
    record.imported_version = version.number
    record.save(update_fields=["sealed_private_key", "used_at", "imported_version"])
    audit_event_record(
        action=VaultAction.KEY_IMPORTED,
        actor=actor,
        target=key,
        target_label=key.name,
        details={
            "key": key.name,
            "state": key.state,
            "version": version.number,
            "origin": KeyOrigin.EXTERNAL.value,
            "fingerprint": version.fingerprint,
            "previous_version": previous.number if previous else None,
            "import_id": import_id,
            "wrapping_algorithm": "RSA_AES_KEY_WRAP_SHA_256",
        },
    )
    return version
