"""The operations API's service: use a vault key for a client without the key leaving.

`key_operation_perform` runs one request (a batch of up to 1,000 items of one operation on
one key) for an authenticated client: it checks the grant names the operation, the key type
supports it, the key and each version may be used, the encryption context carries the names
the key's policy requires; then does the cryptography (`kmsportal.crypto.operations`) and
records ONE audit event for the batch (count, outcome, versions, error codes) in the same
transaction as the caller's session counter update.

Which versions serve what
-------------------------
* New protected data (encrypt, generate-data-key, mac, sign): the primary version of an
  active key. Re-encrypt writes under the primary version of the destination key.
* Existing data (decrypt, reencrypt's source, mac-verify, verify, public-key): the version
  named in the token, if the key is active or deactivated (decrypt-only), the version is not
  destroyed, not pre-active, not below `min_decryption_version`, and not compromised - unless
  the key's policy (`allow_compromised_decrypt`) says otherwise; such use is audited with
  the versions listed as `compromised_versions_used`. A whole key reported compromised can
  only decrypt/verify under that policy, never encrypt or sign.

The loaded keys cache (per process) is `vault.operation_cache`.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pybase64
from django.db import connection, transaction
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.crypto import operations as crypto_ops
from kmsportal.crypto.batch_frame import MAX_ITEMS
from kmsportal.crypto.errors import KMSError

from .events import VaultAction
from .lifecycle import KeyState, VersionState
from .models import Client, KeyVersion, SymmetricKey
from .operation_cache import (
    ItemError,
    forget_key,
    forget_version,
    loaded_key,
)
from .queries import as_datetime, as_uuid, operation_grant_row

MAX_BATCH = MAX_ITEMS  # 1,000

#: Operations that make new protected data with the primary version.
_PRODUCING = frozenset({"encrypt", "generate-data-key", "mac", "sign"})
#: Operations that read existing tokens (the version comes from the token).
_CONSUMING = frozenset({"decrypt", "reencrypt", "mac-verify", "verify"})
#: Operations whose items carry an encryption context (and so the key's required names).
_CONTEXTUAL = frozenset({"encrypt", "decrypt", "reencrypt", "generate-data-key"})
OPERATIONS_API = tuple(op for op in crypto_ops.OPERATIONS if op != "fetch")

_UNUSABLE_KEY_STATES = {
    KeyState.PENDING_DESTRUCTION,
    KeyState.DESTROYED,
    KeyState.DESTROYED_COMPROMISED,
}
_DESTROYED_VERSION_STATES = {VersionState.DESTROYED, VersionState.DESTROYED_COMPROMISED}


class OperationRefused(KMSError):
    """The whole request is refused: `code` (stable), `message` (for people), HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message, code=code, status=status)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- checks ------------------------------------------------------------------------------------


def _b64(value: object, member: str) -> bytes:
    if type(value) is bytes:  # a field of the binary frame (JSON never gives bytes)
        return value
    if not isinstance(value, str):
        raise ItemError("bad_input", f"{member} must be a base64 string")
    try:
        # pybase64 (SIMD): the stdlib's decoder took ~5 us per 1 KiB item, four times the
        # AES-GCM encryption itself. validate=True refuses characters outside the alphabet
        # and bad padding, as binascii's strict_mode did.
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ItemError("bad_input", f"{member} is not valid base64") from None


def _context(raw: object, key: SymmetricKey) -> crypto_ops.EncodedContext:
    try:
        context = crypto_ops.encode_context(raw)
    except crypto_ops.OperationError as exc:
        raise ItemError(exc.code, exc.message) from None
    missing = [name for name in key.required_context_keys if name not in context.pairs]
    if missing:
        raise ItemError(
            "context_required",
            f"key {key.name} requires the encryption context to name: {', '.join(missing)}",
        )
    return context


class _Contexts:
    """The encryption contexts of one batch: each distinct one is checked (and its key's
    required names) and encoded once, however many items carry it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], crypto_ops.EncodedContext] = {}

    def of(
        self, item: dict[str, Any], key: SymmetricKey, member: str = "context"
    ) -> crypto_ops.EncodedContext:
        raw = item.get(member)
        memo: tuple[Any, ...] | None = None
        if raw is None or type(raw) is dict:
            memo = (key.name, *raw.items()) if raw else (key.name,)
            try:
                found = self._seen.get(memo)
            except TypeError:  # an unhashable value: not a context, `_context` says why
                memo = found = None
            if found is not None:
                return found
        context = _context(raw, key)
        if memo is not None:
            self._seen[memo] = context
        return context


def _from_db(model: type[Any], **values: Any) -> Any:
    """A model instance from already converted column values (the rest deferred), as the
    ORM builds one: `Model.from_db` takes the values in the model's field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def _key_for(
    client: Client, name: object, operation: str
) -> tuple[SymmetricKey, KeyVersion | None]:
    """The key, if a live grant of `client` names `operation` for it (else refused), and its
    primary version if it has one (read in the same statement; see `_primary`)."""
    if not isinstance(name, str) or not name:
        raise OperationRefused("bad_key_name", "name the key")
    row = operation_grant_row(client_id=client.pk, key_name=name)
    expires_at = as_datetime(row[1]) if row else None
    if row is None or (expires_at is not None and expires_at <= timezone.now()):
        raise OperationRefused(
            "not_granted", f"client {client.name} has no live grant for key {name}", 403
        )
    operations = [op for op in row[0].split(",") if op]
    if operation not in operations:
        raise OperationRefused(
            "operation_not_granted",
            f"client {client.name} may not {operation} with key {name} (the grant allows: "
            f"{', '.join(operations)})",
            403,
        )
    context_keys = row[7]
    if isinstance(context_keys, str):  # SQLite hands JSON back as text
        context_keys = json.loads(context_keys)
    key: SymmetricKey = _from_db(
        SymmetricKey,
        id=as_uuid(row[2]),
        name=row[3],
        state=row[4],
        algorithm=row[5],
        min_decryption_version=row[6],
        required_context_keys=context_keys or [],
        allow_compromised_decrypt=bool(row[8]),
        updated_at=as_datetime(row[9]),
    )
    primary: KeyVersion | None = None
    if row[10] is not None:
        primary = _from_db(
            KeyVersion,
            id=row[10],
            key_id=key.id,
            number=row[11],
            state=row[12],
            sealed_material=row[13],
            is_primary=True,
        )
    if operation not in crypto_ops.operations_for(key.key_type):
        raise OperationRefused(
            "unsupported_operation", f"a {key.key_type} key does not support {operation}"
        )
    return key, primary


def _check_key_state(key: SymmetricKey, operation: str) -> None:
    state = key.state
    if state in _UNUSABLE_KEY_STATES:
        forget_key(key.pk)  # material of a key that is going away leaves memory now
    if state in (KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED):
        raise OperationRefused("key_destroyed", f"key {key.name} is destroyed", 410)
    if state == KeyState.PENDING_DESTRUCTION:
        raise OperationRefused(
            "key_pending_destruction", f"key {key.name} is scheduled for destruction", 409
        )
    if state == KeyState.SUSPENDED:
        raise OperationRefused("key_suspended", f"key {key.name} is suspended", 409)
    if state == KeyState.PRE_ACTIVE:
        raise OperationRefused("key_not_active", f"key {key.name} is not active yet", 409)
    if state == KeyState.COMPROMISED:
        if operation in _PRODUCING or not key.allow_compromised_decrypt:
            if not key.allow_compromised_decrypt:
                forget_key(key.pk)
            raise OperationRefused(
                "key_compromised", f"key {key.name} is reported compromised", 409
            )
        return
    if operation in _PRODUCING and state != KeyState.ACTIVE:
        raise OperationRefused(
            "key_not_active",
            f"key {key.name} is {key.get_state_display()}: it decrypts and verifies only",
            409,
        )


def _primary(key: SymmetricKey, version: KeyVersion | None) -> KeyVersion:
    """The primary `version` `_key_for` read with `key`, if it is active (else refused)."""
    if version is None or version.state != VersionState.ACTIVE:
        raise OperationRefused("no_active_version", f"key {key.name} has no active version", 409)
    return version


class _Versions:
    """Versions of one key read for this request (one query), checked for reading tokens."""

    def __init__(self, key: SymmetricKey, numbers: set[int]) -> None:
        self.key = key
        self.rows = (
            {v.number: v for v in key.versions.filter(number__in=numbers)} if numbers else {}
        )
        self.compromised_used: set[int] = set()
        self.used: set[int] = set()

    def loaded(self, number: int) -> crypto_ops.LoadedKey:
        key = self.key
        version = self.rows.get(number)
        if version is None:
            raise ItemError("unknown_version", f"key {key.name} has no version {number}")
        if version.state in _DESTROYED_VERSION_STATES or version.sealed_material is None:
            forget_version(version.pk)
            raise ItemError(
                "version_destroyed",
                f"version {number} of {key.name} was destroyed: this data cannot be recovered",
            )
        if version.state == VersionState.PRE_ACTIVE:
            raise ItemError("version_not_active", f"version {number} is not active yet")
        if number < key.min_decryption_version:
            raise ItemError(
                "version_below_minimum",
                f"version {number} of {key.name} is below its minimum decryption version "
                f"{key.min_decryption_version}",
            )
        if version.state == VersionState.COMPROMISED:
            if not key.allow_compromised_decrypt:
                self.compromised_used.add(number)
                raise ItemError(
                    "version_compromised",
                    f"version {number} of {key.name} is reported compromised; its policy "
                    "forbids using it",
                )
            self.compromised_used.add(number)
        self.used.add(number)
        return loaded_key(key, version)


def _token(
    value: object, key: SymmetricKey, member: str, parsed: dict[str, crypto_ops.Token]
) -> crypto_ops.Token:
    try:
        token = parsed.get(value) if isinstance(value, str) else None
        if token is None:
            token = crypto_ops.parse_token(value)
    except crypto_ops.OperationError as exc:
        raise ItemError(exc.code, f"{member}: {exc.message}") from None
    if token.key_id != key.id:
        raise ItemError("wrong_key", f"this {member} was not made by key {key.name}")
    return token


def _parsed_tokens(items: list[Any], member: str) -> dict[str, crypto_ops.Token]:
    """The tokens of a batch that parse, by their text: the versions to read come from
    them, and each item then uses its parsed token (a bad one is reported per item)."""
    parsed: dict[str, crypto_ops.Token] = {}
    for item in items:
        value = item.get(member) if isinstance(item, dict) else None
        if isinstance(value, str):
            try:
                parsed[value] = crypto_ops.parse_token(value)
            except crypto_ops.OperationError:
                continue  # reported per item
    return parsed


# --- the service -------------------------------------------------------------------------------

_TOKEN_MEMBER = {"decrypt": "ciphertext", "reencrypt": "ciphertext", "mac-verify": "mac",
                 "verify": "signature"}  # fmt: skip


@dataclass
class OperationResult:
    """What `key_operation_perform` answers: one result per item, in order."""

    key: str
    operation: str
    results: list[dict[str, Any]]


def _b64e(data: bytes) -> str:
    return pybase64.b64encode_as_string(data)


def _raw(data: bytes) -> bytes:
    return data


#: How a result's binary member is given back: base64 text (JSON) or bytes (binary frame).
_Binary = Callable[[bytes], str | bytes]


def key_operation_perform(
    *,
    client: Client,
    operation: str,
    key_name: object,
    items: object,
    options: dict[str, Any] | None = None,
    raw: bool = False,
) -> OperationResult:
    """Perform `operation` on each of `items` (1-1,000) with `key_name` for `client`.

    Binary item members (plaintext, message) are base64 text, or bytes (the binary frame's
    fields); with `raw`, binary results (plaintext, data keys) are bytes instead of base64.

    Runs in the caller's transaction if there is one (the API's session-counter update), and
    records one audit event: `key.operation` with count and outcome, or
    `key.operation_refused` if the whole request is refused (raised as OperationRefused).
    Items that fail individually get ``{"error": {"code", "detail"}}`` in their place.
    """
    options = options or {}
    try:
        # A savepoint: a refusal undoes whatever this request did, but not the caller's
        # transaction (the session counter stays spent), where the refusal is then recorded.
        with transaction.atomic():
            if operation not in OPERATIONS_API:
                raise OperationRefused("unknown_operation", f"no operation {operation!r}", 404)
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                raise OperationRefused(
                    "bad_batch", f"items must be a list of 1 to {MAX_BATCH} entries"
                )
            key, primary = _key_for(client, key_name, operation)
            _check_key_state(key, operation)
            return _perform(client, key, primary, operation, items, options, raw)
    except OperationRefused as refusal:
        label = key_name[:100] if isinstance(key_name, str) else ""
        with transaction.atomic():
            audit_event_record(
                action=VaultAction.KEY_OPERATION_REFUSED,
                outcome=Outcome.DENIED,
                actor=client,
                actor_name=client.name,
                target_type="vault.SymmetricKey",
                target_label=label,
                details={
                    "client": client.name,
                    "key": label or None,
                    "operation": str(operation)[:40],
                    "code": refusal.code,
                    "reason": refusal.message,
                },
            )
        raise


def _perform(
    client: Client,
    key: SymmetricKey,
    key_primary: KeyVersion | None,
    operation: str,
    items: list[Any],
    options: dict[str, Any],
    raw: bool,
) -> OperationResult:
    member = _TOKEN_MEMBER.get(operation)
    tokens = _parsed_tokens(items, member) if member else {}
    versions = _Versions(key, {token.version for token in tokens.values()})
    producer: crypto_ops.LoadedKey | None = None
    destination: SymmetricKey | None = None
    if operation in _PRODUCING:
        primary = _primary(key, key_primary)
        producer = _loaded_or_refuse(key, primary)
        versions.used.add(primary.number)
    if operation == "reencrypt":
        destination, destination_primary = key, key_primary
        name = options.get("destination_key")
        if name is not None and name != key.name:
            destination, destination_primary = _key_for(client, name, "encrypt")
            _check_key_state(destination, "encrypt")
        elif key.state != KeyState.ACTIVE:
            raise OperationRefused(
                "key_not_active", f"key {key.name} is not active: re-encrypt under another key"
            )
        primary = _primary(destination, destination_primary)
        producer = _loaded_or_refuse(destination, primary)
    if operation == "public-key":
        return _public_key(client, key, key_primary, items, versions)

    results: list[dict[str, Any]] = []
    codes: Counter[str] = Counter()
    contexts = _Contexts()
    binary: _Binary = _raw if raw else _b64e
    if operation == "encrypt":
        results = _encrypt_items(key, items, _writer(producer), contexts, codes)
        _audit_batch(client, key, operation, len(items), codes, versions, destination)
        return OperationResult(key=key.name, operation=operation, results=results)
    for item in items:
        try:
            if not isinstance(item, dict):
                raise ItemError("bad_input", "each item must be an object")
            results.append(
                _item(
                    operation,
                    key,
                    item,
                    producer,
                    versions,
                    destination,
                    options,
                    contexts,
                    tokens,
                    binary,
                )
            )
        except ItemError as exc:
            codes[exc.code] += 1
            results.append({"error": {"code": exc.code, "detail": exc.message}})
        except crypto_ops.OperationError as exc:
            codes[exc.code] += 1
            results.append({"error": {"code": exc.code, "detail": exc.message}})
    _audit_batch(client, key, operation, len(items), codes, versions, destination)
    return OperationResult(key=key.name, operation=operation, results=results)


def _encrypt_items(
    key: SymmetricKey,
    items: list[Any],
    producer: crypto_ops.LoadedKey,
    contexts: _Contexts,
    codes: Counter[str],
) -> list[dict[str, Any]]:
    """The results of a batch of encrypts: each item checked as `_produce` checks it, the
    valid ones encrypted together (`crypto_ops.encrypt_many`), errors in their places."""
    results: list[dict[str, Any]] = []
    places: list[int] = []
    batch: list[tuple[bytes, crypto_ops.EncodedContext]] = []
    for item in items:
        try:
            if type(item) is not dict:
                raise ItemError("bad_input", "each item must be an object")
            plaintext = _b64(item.get("plaintext"), "plaintext")
            batch.append((plaintext, contexts.of(item, key)))
            places.append(len(results))
            results.append({})
        except ItemError as exc:
            codes[exc.code] += 1
            results.append({"error": {"code": exc.code, "detail": exc.message}})
    version = producer.version
    for place, outcome in zip(places, crypto_ops.encrypt_many(producer, batch), strict=True):
        if isinstance(outcome, crypto_ops.OperationError):
            codes[outcome.code] += 1
            results[place] = {"error": {"code": outcome.code, "detail": outcome.message}}
        else:
            results[place] = {"ciphertext": outcome, "version": version}
    return results


def _loaded_or_refuse(key: SymmetricKey, version: KeyVersion) -> crypto_ops.LoadedKey:
    try:
        return loaded_key(key, version)
    except ItemError as exc:
        raise OperationRefused(exc.code, exc.message, 500) from None


def _item(
    operation: str,
    key: SymmetricKey,
    item: dict[str, Any],
    producer: crypto_ops.LoadedKey | None,
    versions: _Versions,
    destination: SymmetricKey | None,
    options: dict[str, Any],
    contexts: _Contexts,
    tokens: dict[str, crypto_ops.Token],
    binary: _Binary,
) -> dict[str, Any]:
    if operation in _PRODUCING:
        return _produce(operation, key, item, _writer(producer), options, contexts, binary)
    member = _TOKEN_MEMBER[operation]
    token = _token(item.get(member), key, member, tokens)
    if operation == "decrypt":
        loaded = versions.loaded(token.version)
        plaintext = crypto_ops.decrypt(loaded, token, contexts.of(item, key))
        return {"plaintext": binary(plaintext), "version": token.version}
    if operation == "reencrypt":
        loaded = versions.loaded(token.version)
        plaintext = crypto_ops.decrypt(loaded, token, contexts.of(item, key))
        target = destination or key
        context = (
            contexts.of(item, target, "destination_context")
            if "destination_context" in item
            else contexts.of(item, target)
        )
        writer = _writer(producer)
        return {
            "ciphertext": crypto_ops.encrypt(writer, plaintext, context),
            "version": writer.version,
            "key": target.name,
        }
    message = _b64(item.get("message"), "message")
    loaded = versions.loaded(token.version)
    if operation == "mac-verify":
        return {"valid": crypto_ops.mac_verify(loaded, message, token), "version": token.version}
    return {"valid": crypto_ops.verify(loaded, message, token), "version": token.version}


def _writer(producer: crypto_ops.LoadedKey | None) -> crypto_ops.LoadedKey:
    """The version `_perform` loaded for an operation that writes (never None there)."""
    if producer is None:
        raise AssertionError("no version loaded to write with")
    return producer


def _produce(
    operation: str,
    key: SymmetricKey,
    item: dict[str, Any],
    producer: crypto_ops.LoadedKey,
    options: dict[str, Any],
    contexts: _Contexts,
    binary: _Binary,
) -> dict[str, Any]:
    """One item of generate-data-key, mac or sign (with the primary version; encrypt is done
    for the whole batch by `_encrypt_items`)."""
    if operation == "generate-data-key":
        data_key, ciphertext = crypto_ops.generate_data_key(producer, contexts.of(item, key))
        answer: dict[str, Any] = {"ciphertext": ciphertext, "version": producer.version}
        if options.get("plaintext", True):
            answer["plaintext"] = binary(data_key)
        return answer
    if operation == "mac":
        return {
            "mac": crypto_ops.mac(producer, _b64(item.get("message"), "message")),
            "version": producer.version,
        }
    return {
        "signature": crypto_ops.sign(producer, _b64(item.get("message"), "message")),
        "version": producer.version,
    }


def _public_key(
    client: Client,
    key: SymmetricKey,
    key_primary: KeyVersion | None,
    items: list[Any],
    versions: _Versions,
) -> OperationResult:
    results: list[dict[str, Any]] = []
    codes: Counter[str] = Counter()
    for item in items:
        try:
            number = item.get("version") if isinstance(item, dict) else None
            if number is None:
                number = _primary(key, key_primary).number
            if type(number) is not int or number < 1:
                raise ItemError("bad_version", "version must be a positive integer")
            if number not in versions.rows:
                # One query per asked version; public keys are rarely batched.
                row = key.versions.filter(number=number).first()
                if row is not None:
                    versions.rows[number] = row
            loaded = versions.loaded(number)
            results.append({"public_key": crypto_ops.public_key_pem(loaded), "version": number})
        except (ItemError, crypto_ops.OperationError) as exc:
            codes[exc.code] += 1
            results.append({"error": {"code": exc.code, "detail": exc.message}})
    _audit_batch(client, key, "public-key", len(items), codes, versions, None)
    return OperationResult(key=key.name, operation="public-key", results=results)


def _audit_batch(
    client: Client,
    key: SymmetricKey,
    operation: str,
    count: int,
    codes: Counter[str],
    versions: _Versions,
    destination: SymmetricKey | None,
) -> None:
    failed = sum(codes.values())
    details: dict[str, Any] = {
        "client": client.name,
        "key": key.name,
        "operation": operation,
        "count": count,
        "succeeded": count - failed,
        "failed": failed,
        "versions": sorted(versions.used),
        "error_codes": dict(sorted(codes.items())),
    }
    if versions.compromised_used:
        details["compromised_versions_used"] = sorted(versions.compromised_used)
    if destination is not None and destination.pk != key.pk:
        details["destination_key"] = destination.name
    audit_event_record(
        action=VaultAction.KEY_OPERATION,
        outcome=Outcome.SUCCESS if failed == 0 else Outcome.ERROR,
        actor=client,
        actor_name=client.name,
        target=key,
        target_label=key.name,
        details=details,
    )
