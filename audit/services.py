"""Writing the audit log and keeping its keys (MAC keys, tree head signing keys, trust anchors);
verifying it is audit.checking.

`audit_event_record` is the only way events are written. It runs inside the caller's
transaction: if the caller's change rolls back, the event goes with it; if the event cannot
be written, the exception propagates and the caller's change rolls back (fail closed).

Lock order: a service changes its own rows first and records its event last. Recording takes
no lock of its own (no chain head row, no global lock): the event number comes from a
PostgreSQL sequence (on SQLite, max + 1 under the write lock every transaction there already
holds), and the event is one INSERT. So concurrent writers do not wait on each other for the
audit log, and recording adds no edge to a lock cycle. The sequencer (audit.sequencer)
integrates committed events later, in its own transactions, under its own advisory lock.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import models, transaction
from django.utils import timezone

from kmsportal.cli_actor import command_line_actor
from kmsportal.crypto.audit_chain import (
    public_key_from_pem,
    public_key_to_pem,
)
from kmsportal.crypto.audit_log import (
    event_entry,
    event_mac,
    key_id,
    public_key_from_text,
)
from kmsportal.crypto.canonical import MAX_SAFE_INTEGER, canonical_json
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.merkle import leaf_hash
from kmsportal.keyring.services import seal, unseal

from .context import request_meta
from .models import (
    ActorType,
    AuditAction,
    AuditEvent,
    AuditMacKey,
    AuditSigningKey,
    Outcome,
)
from .queries import next_event_number
from .registry import audit_action_is_registered

# Names that must never appear as keys in `details`: secrets are never audited. A service
# that tries fails loudly (and, being fail-closed, its change does not happen).
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "password",
        "password1",
        "password2",
        "secret",
        "token",
        "private_key",
        "key_material",
        "material",
        "plaintext",
        "passphrase",
        "pkcs12",
    }
)


class AuditChainError(KMSError, RuntimeError):
    """The chain cannot be appended to safely (for example its head row is missing)."""

    code = "audit_chain_broken"
    status = 500


class AuditDetailsError(ValueError):
    """`details` holds something that must not or cannot be audited."""


def _check_details(value: Any, path: str = "details") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditDetailsError(f"{path}: keys must be strings")
            if key.lower() in FORBIDDEN_DETAIL_KEYS:
                raise AuditDetailsError(f"{path}.{key}: secrets are never written to the audit log")
            _check_details(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_details(item, f"{path}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        raise AuditDetailsError(f"{path}: integers beyond 2**53 are not auditable; use a string")
    elif isinstance(value, float) or not (value is None or isinstance(value, str | int | bool)):
        # Floats do not survive every database's JSON type byte for byte; the hash must.
        raise AuditDetailsError(f"{path}: {type(value).__name__} is not an auditable value")


def _actor_fields(
    actor: User | models.Model | None, *, anonymous: bool, actor_name: str | None
) -> tuple[str, str, str]:
    if actor is None:
        if anonymous:
            return ActorType.USER, "", actor_name or "anonymous"
        cli = command_line_actor()  # set once per management command run (manage.py)
        if cli is not None and actor_name is None:
            return (ActorType.USER if cli.user_id else ActorType.SYSTEM), cli.user_id, cli.name
        return ActorType.SYSTEM, "", actor_name or "system"
    if isinstance(actor, AbstractBaseUser):
        return ActorType.USER, str(actor.pk), actor.get_username()
    # A client service (vault.Client) acts with its own identity.
    return ActorType.CLIENT, str(actor.pk), actor_name or str(actor)


def audit_event_record(
    *,
    action: AuditAction | str,
    outcome: Outcome | str = Outcome.SUCCESS,
    actor: User | models.Model | None = None,
    anonymous: bool = False,
    actor_name: str | None = None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Insert one event, inside the caller's transaction, without a global lock.

    `actor` is a user, a client service, or None for the system (`anonymous=True` for a
    request without a signed-in user). `target` fills target type/id/label from a model
    instance. `details` is JSON (str, int within 2**53, bool, None, lists, dicts) and never
    holds secrets. Source IP and request id come from the current request, if any.

    The event carries its leaf hash and its MAC under the keyring-sealed MAC key; the
    sequencer (audit.sequencer) later gives it a leaf index and signs a tree head over it.
    """
    if not audit_action_is_registered(str(action)):
        # Every type must be registered (and so listed in the README and the filters).
        raise AuditDetailsError(f"unregistered audit event type {str(action)!r}")
    details = dict(details or {})
    _check_details(details)
    actor_type, actor_id, name = _actor_fields(actor, anonymous=anonymous, actor_name=actor_name)
    if target is not None:
        target_type = target_type or target._meta.label
        target_id = target_id or str(target.pk)
        target_label = target_label or str(target)
    meta = request_meta()
    # No savepoint inside the caller's transaction (two round trips saved per event): an
    # insert that fails marks the whole transaction for rollback, so the change it records
    # cannot commit without it even if the caller catches the error (fail closed). Called
    # outside a transaction, this is the transaction.
    with transaction.atomic(savepoint=False):
        sequence, newest_key = next_event_number()
        mac_key_id, mac_key = audit_mac_key(newest_key)
        event = AuditEvent(
            sequence=sequence,
            time=timezone.now(),
            actor_type=actor_type,
            actor_id=actor_id[:64],
            actor_name=name[:150],
            action=str(action),
            target_type=target_type[:64],
            target_id=str(target_id)[:64],
            target_label=str(target_label)[:255],
            outcome=str(outcome),
            source_ip=meta.source_ip if meta else "",
            request_id=meta.request_id if meta else "",
            details=details,
            prev_hash="",
            mac_key_id=mac_key_id,
        )
        entry = event_entry(event.chain_fields())
        event.hash = leaf_hash(entry).hex()
        event.mac = event_mac(mac_key, entry)
        event.save()
    return event


# --- keys -------------------------------------------------------------------------------

_key_lock = threading.Lock()
# Unsealed once per process, by row id. Which key is current is read with each event's number
# (audit.queries.next_event_number), so an event never names a key row that is not in the database.
_mac_keys: dict[str, bytes] = {}
_signing_cache: tuple[str, Ed25519PrivateKey] | None = None


def audit_keys_forget() -> None:
    """Drop the per-process key caches (tests that flush the database between them)."""
    global _signing_cache
    with _key_lock:
        _mac_keys.clear()
        _signing_cache = None


def _mac_key_unseal(row: AuditMacKey) -> bytes:
    with _key_lock:
        key = _mac_keys.get(str(row.pk))
    if key is None:
        key = unseal(bytes(row.sealed_key), aad=row.aad)
        with _key_lock:
            _mac_keys[str(row.pk)] = key
    return key


def audit_mac_key(newest: str | None = None) -> tuple[str, bytes]:
    """(row id, key) of the MAC key new events use, given the newest key row's id as just
    read (None: read it here); generated and sealed on first use, unsealed once per process.

    The key is random, not derived from master-key bytes, so it works the same when the
    master key lives in an HSM (only seal/unseal are needed). Concurrent first uses may each
    create a key: harmless, every event names its key.
    """
    if newest is None:
        row_id = AuditMacKey.objects.order_by("-created_at").values_list("pk", flat=True).first()
        newest = None if row_id is None else str(row_id)
    if newest is not None:
        with _key_lock:
            key = _mac_keys.get(newest)
        if key is not None:
            return newest, key
        return newest, _mac_key_unseal(AuditMacKey.objects.get(pk=newest))
    row = AuditMacKey(sealed_key=b"")
    key = secrets.token_bytes(32)
    row.sealed_key = seal(key, aad=row.aad)
    row.save()
    with _key_lock:
        _mac_keys[str(row.pk)] = key
    return str(row.pk), key


def audit_mac_keys_by_id(ids: set[str]) -> dict[str, bytes]:
    """The MAC keys named by events, unsealed (a key that does not unseal is left out)."""
    out: dict[str, bytes] = {}
    for row in AuditMacKey.objects.filter(pk__in=ids):
        try:
            out[str(row.pk)] = _mac_key_unseal(row)
        except Exception:  # noqa: S112 - a swapped or corrupt blob: its events fail to verify
            continue
    return out


@transaction.atomic
def audit_signing_key_ensure() -> tuple[AuditSigningKey, bool]:
    """The current tree head signing key (the newest), generated and sealed if none exists.
    Returns (key, created)."""
    existing = AuditSigningKey.objects.order_by("-created_at").first()
    if existing is not None:
        return existing, False
    return _signing_key_create(action=AuditAction.AUDIT_SIGNING_KEY_CREATED, actor=None), True


def _signing_key_create(
    *, action: AuditAction, actor: User | None, previous: str = ""
) -> AuditSigningKey:
    private_key = Ed25519PrivateKey.generate()
    row = AuditSigningKey(
        public_key_pem=public_key_to_pem(private_key.public_key()), sealed_private_key=b""
    )
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    row.sealed_private_key = seal(raw, aad=row.aad)
    row.save()
    details = {
        "algorithm": "ed25519",
        "key_id": key_id(private_key.public_key()),
        "public_key_pem": row.public_key_pem,
    }
    if previous:
        details["previous_key_id"] = previous
    audit_event_record(action=action, actor=actor, target=row, details=details)
    return row


def audit_signing_key_rotate(*, actor: User | None) -> AuditSigningKey:
    """Make a new signing key; the rotation is recorded in the log and the head covering
    that record is signed by the OLD key, so a verifier holding the old key learns the new
    one from the log itself. Pin the new public key (KMS_AUDIT_PUBLIC_KEYS) before rotating
    if you pin keys."""
    from .sequencer import audit_integrate

    old, _ = audit_signing_key_ensure()
    with transaction.atomic():
        row = _signing_key_create(
            action=AuditAction.AUDIT_SIGNING_KEY_ROTATED,
            actor=actor,
            previous=key_id(public_key_from_pem(old.public_key_pem)),
        )
    audit_integrate(sign_with=old)
    return row


def audit_signing_key_private(row: AuditSigningKey) -> Ed25519PrivateKey:
    """The row's private key, unsealed once per process."""
    global _signing_cache
    with _key_lock:
        cached = _signing_cache
    if cached is not None and cached[0] == str(row.pk):
        return cached[1]
    raw = unseal(bytes(row.sealed_private_key), aad=row.aad)
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    with _key_lock:
        _signing_cache = (str(row.pk), private_key)
    return private_key


def _signing_key() -> tuple[AuditSigningKey, Ed25519PrivateKey]:
    row, _ = audit_signing_key_ensure()
    return row, audit_signing_key_private(row)


class AuditTrustError(KMSError, RuntimeError):
    """The audit signing key in the database cannot be trusted."""

    code = "audit_key_untrusted"
    status = 500


class AuditHeadUntrustedError(KMSError, RuntimeError):
    """The newest signed tree head does not verify with a trusted audit key: it must not be
    handed out as a head to keep (a database writer may have swapped the key and re-signed)."""

    code = "audit_head_untrusted"
    status = 409


def audit_trusted_keys() -> dict[str, Ed25519PublicKey]:
    """Every audit signing key, by key id, checked against anchors outside the database.

    Each row's public key must be the one its sealed private key gives (unsealing needs the
    master keyring, which a database writer does not have), and, when KMS_AUDIT_PUBLIC_KEYS
    pins keys, must be pinned. Raises AuditTrustError saying which check failed.
    """
    pinned = {key_id(k): k for k in _pinned_keys()}
    trusted: dict[str, Ed25519PublicKey] = {}
    for row in AuditSigningKey.objects.order_by("created_at"):
        try:
            public = public_key_from_pem(row.public_key_pem)
        except ValueError as exc:
            raise AuditTrustError(f"audit signing key {row.pk}: {exc}") from None
        kid = key_id(public)
        try:
            derived = audit_signing_key_private(row).public_key()
        except Exception:
            raise AuditTrustError(
                f"audit signing key {kid[:16]}…: its sealed private key does not unseal with "
                "the master keyring (the key row was swapped or damaged)"
            ) from None
        if key_id(derived) != kid:
            raise AuditTrustError(
                f"audit signing key {kid[:16]}…: the public key in the database is not the one "
                "its sealed private key gives (the public key was swapped): refusing to trust it"
            )
        if pinned and kid not in pinned:
            raise AuditTrustError(
                f"audit signing key {kid[:16]}… is not among KMS_AUDIT_PUBLIC_KEYS: the "
                "database's key differs from the pinned one(s); refusing to trust it"
            )
        trusted[kid] = public
    return trusted


def _pinned_keys() -> list[Ed25519PublicKey]:
    texts = getattr(settings, "KMS_AUDIT_PUBLIC_KEYS", []) or []
    return [public_key_from_text(text) for text in texts]


def audit_export_start(*, actor: User | None, fmt: str, filters: dict[str, Any]) -> None:
    """Record an export before its first byte is streamed (fail closed), then integrate
    everything committed so the signed head ending the export covers the newest events
    (this record included)."""
    from .sequencer import audit_integrate

    with transaction.atomic():
        audit_signing_key_ensure()
        audit_event_record(
            action=AuditAction.AUDIT_EXPORTED,
            actor=actor,
            target_type="audit.AuditChain",
            target_label="audit log export",
            details={"format": fmt, "filters": filters},
        )
    audit_integrate()


def details_json(details: dict[str, Any]) -> str:
    """Details as canonical JSON text, for display and CSV export."""
    return canonical_json(details).decode("utf-8")
