"""Symmetric key lifecycle: every service is one transaction that records its audit event.

Concurrency: each service first locks the key row (SELECT ... FOR UPDATE) and re-reads its
state, so two custodians acting on one key at the same moment are serialised and the second
sees the first's result. The audit event is recorded last (see audit.services: lock order).

Key material: generated from the OS CSPRNG, sealed at once with AAD naming the key and the
version number, and never stored, logged, rendered or audited in any other form. Only its
key check value (fingerprint) is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.approvers import approver_check
from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.actors import Actor, actor_name
from kmsportal.crypto import operations as crypto_ops
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.errors import KMSError
from kmsportal.keyring.backends import KeyBackendError, key_backend
from kmsportal.keyring.services import (
    seal_material,
    sealed_material_destroy,
    storage_scrub,
    unseal_material,
)
from kmsportal.two_person import two_person_check_not_requester, two_person_lapse

from .events import VaultAction
from .lifecycle import (
    InvalidTransition,
    KeyAction,
    KeyState,
    VersionState,
    next_state,
    state_after,
)
from .models import (
    DESTRUCTION_REQUEST_TTL,
    DESTRUCTION_WAIT_DEFAULT_DAYS,
    DESTRUCTION_WAIT_MAX_DAYS,
    DESTRUCTION_WAIT_MIN_DAYS,
    ROTATION_DAYS_MAX,
    ROTATION_DAYS_MIN,
    Algorithm,
    DestructionRequest,
    KeyOrigin,
    KeyVersion,
    SymmetricKey,
)


class VaultError(KMSError):
    """A vault action that cannot be done as asked; the message says why."""

    code = "vault_refused"
    status = 400


class KeyIntegrityError(VaultError):
    """Sealed key material failed to unseal (tampered, or bound to another row)."""

    code = "key_integrity"
    status = 409


def _locked(key: SymmetricKey) -> SymmetricKey:
    """The key row, locked for this transaction and freshly read."""
    return SymmetricKey.objects.select_for_update().get(pk=key.pk)


def _record(
    action: VaultAction,
    *,
    actor: Actor,
    key: SymmetricKey,
    details: dict[str, Any] | None = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> None:
    audit_event_record(
        action=action,
        outcome=outcome,
        actor=actor,
        target=key,
        target_label=key.name,
        details={"key": key.name, "state": key.state, **(details or {})},
    )


def _new_version(
    key: SymmetricKey,
    *,
    number: int,
    state: VersionState,
    now: datetime,
    material: bytes | None = None,
    origin: KeyOrigin = KeyOrigin.GENERATED,
) -> KeyVersion:
    """Fingerprint and seal material for `key` (fresh unless imported material is given);
    the plaintext never leaves."""
    version = KeyVersion(
        key=key,
        number=number,
        state=state,
        origin=origin,
        is_primary=True,
        created_at=now,
        activated_at=now if state == VersionState.ACTIVE else None,
    )
    # AES/HMAC: 32 CSPRNG bytes; asymmetric: a private key as PKCS#8 DER (sealed the same way,
    # under the version's own wrapping key when the key backend has one). Imported material
    # (bring your own key) is AES-256 only.
    if material is None:
        material = crypto_ops.generate_material(key.key_type)
    version.fingerprint = crypto_ops.fingerprint(key.key_type, material)
    version.sealed_material = seal_material(material, aad=version.aad)
    del material
    version.save(force_insert=True)
    return version


# Path segments of the key pages that can never be key names.
RESERVED_KEY_NAMES = frozenset({"new", "approvals", "import"})


def _validate_rotation_days(days: int | None) -> None:
    if days is not None and not ROTATION_DAYS_MIN <= days <= ROTATION_DAYS_MAX:
        raise VaultError(
            f"rotation period must be between {ROTATION_DAYS_MIN} and {ROTATION_DAYS_MAX} days"
        )


def _clean_context_keys(names: list[str]) -> list[str]:
    cleaned = sorted({name.strip() for name in names if name.strip()})
    if len(cleaned) > crypto_ops.MAX_CONTEXT_PAIRS or any(len(n) > 256 for n in cleaned):
        raise VaultError(
            f"at most {crypto_ops.MAX_CONTEXT_PAIRS} required context names of 256 characters"
        )
    return cleaned


@transaction.atomic
def symmetric_key_create(
    *,
    actor: Actor,
    name: str,
    description: str = "",
    rotation_period_days: int | None = None,
    activate_at: datetime | None = None,
    key_type: str = "aes-256-gcm",
    required_context_keys: list[str] | None = None,
    allow_compromised_decrypt: bool = False,
    imported_material: bytes | None = None,
) -> SymmetricKey:
    """Create a key of `key_type` (``aes-256-gcm``, ``hmac-sha256``, ``rsa-3072``,
    ``rsa-4096``, ``ecdsa-p256``, ``ecdsa-p384``, ``ed25519``) with version 1, active now or
    pre-active until `activate_at`. `required_context_keys` names encryption-context entries
    every encrypt and decrypt must carry. `imported_material` (from `vault.key_import`,
    AES-256 keys only) becomes version 1 with origin "external" instead of fresh material."""
    _validate_rotation_days(rotation_period_days)
    try:
        algorithm = Algorithm.from_type(key_type)
    except ValueError:
        raise VaultError(
            f"unknown key type {key_type!r}; use one of {', '.join(crypto_ops.KEY_TYPES)}"
        ) from None
    context_keys = _clean_context_keys(required_context_keys or [])
    if imported_material is not None and key_type != "aes-256-gcm":
        raise VaultError("only AES-256 key material can be imported")
    if name in RESERVED_KEY_NAMES:
        raise VaultError(f"{name!r} is a reserved word and cannot name a key")
    now = timezone.now()
    if activate_at is not None and activate_at.tzinfo is None:
        raise VaultError("activation time must include a time zone")
    pending = activate_at is not None and activate_at > now
    key = SymmetricKey(
        name=name,
        description=description,
        algorithm=algorithm,
        required_context_keys=context_keys,
        allow_compromised_decrypt=allow_compromised_decrypt,
        rotation_period_days=rotation_period_days,
        state=KeyState.PRE_ACTIVE if pending else KeyState.ACTIVE,
        activate_at=activate_at if pending else None,
        created_by=actor,
        created_by_name=actor_name(actor),
        created_at=now,
        last_rotated_at=None if pending else now,
    )
    try:
        key.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        if "name" in exc.message_dict and SymmetricKey.objects.filter(name=name).exists():
            raise VaultError(f"a key named {name!r} already exists") from exc
        raise VaultError(
            "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
        ) from exc
    if rotation_period_days and not pending:
        key.next_rotation_at = now + timedelta(days=rotation_period_days)
    key.save(force_insert=True)
    version = _new_version(
        key,
        number=1,
        state=VersionState.PRE_ACTIVE if pending else VersionState.ACTIVE,
        now=now,
        material=imported_material,
        origin=KeyOrigin.GENERATED if imported_material is None else KeyOrigin.EXTERNAL,
    )
    _record(
        VaultAction.KEY_CREATED,
        actor=actor,
        key=key,
        details={
            "algorithm": key.algorithm,
            "required_context_keys": context_keys,
            "allow_compromised_decrypt": allow_compromised_decrypt,
            "rotation_period_days": rotation_period_days,
            "activate_at": key.activate_at.isoformat() if key.activate_at else None,
            "version": 1,
            "fingerprint": version.fingerprint,
            "origin": version.origin,
        },
    )
    return key


@transaction.atomic
def symmetric_key_activate(*, actor: Actor, key: SymmetricKey) -> SymmetricKey:
    """Activate a pre-active key now (its first version becomes usable)."""
    key = _locked(key)
    key.state = state_after(key.state, KeyAction.ACTIVATE)
    now = timezone.now()
    key.activate_at = None
    key.last_rotated_at = now
    if key.rotation_period_days:
        key.next_rotation_at = now + timedelta(days=key.rotation_period_days)
    key.save()
    key.versions.filter(state=VersionState.PRE_ACTIVE).update(
        state=VersionState.ACTIVE, activated_at=now
    )
    _record(VaultAction.KEY_ACTIVATED, actor=actor, key=key)
    return key


@transaction.atomic
def symmetric_key_rotate(
    *, actor: Actor, key: SymmetricKey, min_decryption_version: int | None = None
) -> KeyVersion:
    """Make a fresh primary version; the previous one stays for decryption only.

    `min_decryption_version` may move forward (never back, never past the new version):
    versions below it can no longer decrypt or be distributed.
    """
    key = _locked(key)
    next_state(key.state, KeyAction.ROTATE)
    now = timezone.now()
    number = (key.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    if min_decryption_version is not None:
        if min_decryption_version < key.min_decryption_version:
            raise VaultError(
                f"minimum decryption version can only move forward (it is "
                f"{key.min_decryption_version})"
            )
        if min_decryption_version > number:
            raise VaultError(
                f"minimum decryption version {min_decryption_version} is past the new version "
                f"{number}"
            )
    version, previous = _primary_replace(key, number=number, now=now)
    if min_decryption_version is not None:
        key.min_decryption_version = min_decryption_version
    key.last_rotated_at = now
    key.next_rotation_at = (
        now + timedelta(days=key.rotation_period_days) if key.rotation_period_days else None
    )
    key.save()
    _record(
        VaultAction.KEY_ROTATED,
        actor=actor,
        key=key,
        details={
            "version": number,
            "fingerprint": version.fingerprint,
            "previous_version": previous.number if previous else None,
            "min_decryption_version": key.min_decryption_version,
        },
    )
    return version


def _primary_replace(
    key: SymmetricKey,
    *,
    number: int,
    now: datetime,
    material: bytes | None = None,
    origin: KeyOrigin = KeyOrigin.GENERATED,
) -> tuple[KeyVersion, KeyVersion | None]:
    """A new active primary version; the previous primary stays for decryption only."""
    previous = key.versions.filter(is_primary=True).first()
    if previous is not None:
        previous.is_primary = False
        if previous.state == VersionState.ACTIVE:
            previous.state = VersionState.DEACTIVATED
            previous.deactivated_at = now
        previous.save(update_fields=["is_primary", "state", "deactivated_at"])
    version = _new_version(
        key, number=number, state=VersionState.ACTIVE, now=now, material=material, origin=origin
    )
    return version, previous


def _simple_transition(
    *, actor: Actor, key: SymmetricKey, action: KeyAction, event: VaultAction
) -> SymmetricKey:
    key = _locked(key)
    key.state = state_after(key.state, action)
    key.save()
    _record(event, actor=actor, key=key)
    return key


@transaction.atomic
def symmetric_key_suspend(*, actor: Actor, key: SymmetricKey) -> SymmetricKey:
    """Make the key temporarily unusable (nothing is distributed or decrypted)."""
    return _simple_transition(
        actor=actor, key=key, action=KeyAction.SUSPEND, event=VaultAction.KEY_SUSPENDED
    )


@transaction.atomic
def symmetric_key_resume(*, actor: Actor, key: SymmetricKey) -> SymmetricKey:
    """Undo a suspension. A rotation schedule cleared meanwhile (by an approved and then
    cancelled destruction) starts again from now."""
    key = _locked(key)
    key.state = state_after(key.state, KeyAction.RESUME)
    if key.rotation_period_days and key.next_rotation_at is None:
        key.next_rotation_at = timezone.now() + timedelta(days=key.rotation_period_days)
    key.save()
    _record(VaultAction.KEY_RESUMED, actor=actor, key=key)
    return key


@transaction.atomic
def symmetric_key_deactivate(*, actor: Actor, key: SymmetricKey) -> SymmetricKey:
    """End the key's use for protecting new data; its versions still decrypt."""
    key = _locked(key)
    key.state = state_after(key.state, KeyAction.DEACTIVATE)
    key.next_rotation_at = None
    key.save()
    now = timezone.now()
    key.versions.filter(state=VersionState.ACTIVE).update(
        state=VersionState.DEACTIVATED, deactivated_at=now
    )
    _record(VaultAction.KEY_DEACTIVATED, actor=actor, key=key)
    return key


def _check_compromise_input(reason: str, compromised_at: datetime | None) -> datetime:
    now = timezone.now()
    if not reason.strip():
        raise VaultError("say why the key is considered compromised")
    if compromised_at is None:
        return now
    if compromised_at.tzinfo is None:
        raise VaultError("the time of compromise must include a time zone")
    if compromised_at > now:
        raise VaultError("the time of compromise cannot be in the future")
    return compromised_at


@transaction.atomic
def symmetric_key_compromise(
    *, actor: Actor, key: SymmetricKey, reason: str, compromised_at: datetime | None = None
) -> SymmetricKey:
    """Mark the whole key compromised: every live version too. Cannot be undone."""
    when = _check_compromise_input(reason, compromised_at)
    key = _locked(key)
    key.state = state_after(key.state, KeyAction.COMPROMISE_KEY)
    key.compromised_at = when
    key.compromise_reason = reason.strip()
    key.next_rotation_at = None
    key.save()
    versions = list(
        key.versions.exclude(
            state__in=[VersionState.COMPROMISED, *_DESTROYED_VERSION_STATES]
        ).values_list("number", flat=True)
    )
    key.versions.filter(number__in=versions).update(
        state=VersionState.COMPROMISED,
        compromised_at=when,
        compromise_reason=reason.strip(),
        is_primary=False,
    )
    _record(
        VaultAction.KEY_COMPROMISED,
        actor=actor,
        key=key,
        details={
            "versions": versions,
            "compromised_at": when.isoformat(),
            "reason": reason.strip(),
        },
    )
    return key


_DESTROYED_VERSION_STATES = (VersionState.DESTROYED, VersionState.DESTROYED_COMPROMISED)


@transaction.atomic
def key_version_compromise(
    *,
    actor: Actor,
    key: SymmetricKey,
    number: int,
    reason: str,
    compromised_at: datetime | None = None,
) -> KeyVersion | None:
    """Mark one version compromised; if it was the primary, a fresh version becomes primary
    in the same transaction. Returns the new primary version, if one was made."""
    when = _check_compromise_input(reason, compromised_at)
    key = _locked(key)
    next_state(key.state, KeyAction.COMPROMISE_VERSION)
    version = key.versions.filter(number=number).first()
    if version is None:
        raise VaultError(f"key {key.name} has no version {number}")
    if version.state in (VersionState.COMPROMISED, *_DESTROYED_VERSION_STATES):
        raise VaultError(f"version {number} of {key.name} is already {version.get_state_display()}")
    was_primary = version.is_primary
    version.state = VersionState.COMPROMISED
    version.is_primary = False
    version.compromised_at = when
    version.compromise_reason = reason.strip()
    version.save()
    replacement = None
    # A key still in use gets fresh material at once; a deactivated key encrypts nothing new.
    if was_primary and key.state in (KeyState.ACTIVE, KeyState.SUSPENDED):
        number_new = (key.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        now = timezone.now()
        replacement = _new_version(key, number=number_new, state=VersionState.ACTIVE, now=now)
        key.last_rotated_at = now
        key.next_rotation_at = (
            now + timedelta(days=key.rotation_period_days) if key.rotation_period_days else None
        )
        key.save()
    _record(
        VaultAction.KEY_VERSION_COMPROMISED,
        actor=actor,
        key=key,
        details={
            "version": number,
            "compromised_at": when.isoformat(),
            "reason": reason.strip(),
            "was_primary": was_primary,
            "replacement_version": replacement.number if replacement else None,
            "replacement_fingerprint": replacement.fingerprint if replacement else None,
        },
    )
    return replacement


# --- destruction (two-person rule) ------------------------------------------------------


@transaction.atomic
def destruction_request_create(
    *,
    actor: User,
    key: SymmetricKey,
    waiting_days: int = DESTRUCTION_WAIT_DEFAULT_DAYS,
    reason: str = "",
) -> DestructionRequest:
    """First custodian: ask for the key to be destroyed after `waiting_days` (7-30), saying
    why (a blank reason is refused)."""
    key = _locked(key)
    next_state(key.state, KeyAction.REQUEST_DESTRUCTION)
    if not DESTRUCTION_WAIT_MIN_DAYS <= waiting_days <= DESTRUCTION_WAIT_MAX_DAYS:
        raise VaultError(
            f"the waiting period must be {DESTRUCTION_WAIT_MIN_DAYS} to "
            f"{DESTRUCTION_WAIT_MAX_DAYS} days"
        )
    if not reason.strip():
        raise VaultError("say why the key should be destroyed (the approver reads it)")
    _expire_stale_requests(key)
    if key.destruction_requests.filter(status=DestructionRequest.Status.PENDING).exists():
        raise VaultError(f"a destruction request for {key.name} is already waiting for approval")
    now = timezone.now()
    request = DestructionRequest.objects.create(
        key=key,
        waiting_days=waiting_days,
        reason=reason.strip(),
        requested_by=actor,
        requested_by_name=actor.get_username(),
        requested_at=now,
        expires_at=now + DESTRUCTION_REQUEST_TTL,
    )
    _record(
        VaultAction.KEY_DESTRUCTION_REQUESTED,
        actor=actor,
        key=key,
        details={"request": request.pk, "waiting_days": waiting_days, "reason": request.reason},
    )
    return request


def _expire_stale_requests(key: SymmetricKey) -> None:
    """Requests not approved within 24 hours lapse: they become ``expired``, visibly and
    audited (``key.destruction_expired``), as the other two-person kinds do."""
    two_person_lapse(
        DestructionRequest,
        key=key,
        record=lambda lapsed: _record(
            VaultAction.KEY_DESTRUCTION_EXPIRED,
            actor=None,
            key=key,
            details={
                "request": lapsed.pk,
                "requested_by": lapsed.requested_by_name,
                "reason": lapsed.reason,
                "expired_at": lapsed.expires_at.isoformat(),
            },
        ),
    )


def _pending_request(request: DestructionRequest) -> tuple[DestructionRequest, SymmetricKey]:
    key = _locked(request.key)
    request = DestructionRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != DestructionRequest.Status.PENDING:
        raise VaultError(f"this request is already {request.get_status_display()}")
    if request.is_expired:
        raise VaultError(
            f"this request expired at {request.expires_at:%Y-%m-%d %H:%M} UTC; ask for a new one"
        )
    return request, key


@transaction.atomic
def destruction_request_approve(*, actor: User, request: DestructionRequest) -> SymmetricKey:
    """Second custodian: approve; the key becomes pending destruction (unusable) at once."""
    request, key = _pending_request(request)
    two_person_check_not_requester(
        request, actor, "you asked for this destruction; a different key custodian must approve it"
    )
    # Own password, own authenticator, past the cooling-off (accounts.approvers); its
    # refusal (ApproverNotEligible, 403) goes out as it is, as for the other kinds.
    approver_check(user=actor, permission="vault.destroy_symmetrickey")
    previous = key.state
    key.state = state_after(key.state, KeyAction.SCHEDULE_DESTRUCTION)
    now = timezone.now()
    key.state_before_destruction = previous
    key.destroy_after = now + timedelta(days=request.waiting_days)
    key.next_rotation_at = None
    key.save()
    request.status = DestructionRequest.Status.APPROVED
    request.decided_by = actor
    request.decided_by_name = actor.get_username()
    request.decided_at = now
    request.save()
    _record(
        VaultAction.KEY_DESTRUCTION_APPROVED,
        actor=actor,
        key=key,
        details={
            "request": request.pk,
            "requested_by": request.requested_by_name,
            "destroy_after": key.destroy_after.isoformat(),
        },
    )
    return key


@transaction.atomic
def destruction_request_reject(*, actor: User, request: DestructionRequest) -> DestructionRequest:
    """Turn a request down (another custodian), or withdraw it (the requester)."""
    request, key = _pending_request(request)
    own = request.requested_by_id == actor.pk
    request.status = (
        DestructionRequest.Status.WITHDRAWN if own else DestructionRequest.Status.REJECTED
    )
    request.decided_by = actor
    request.decided_by_name = actor.get_username()
    request.decided_at = timezone.now()
    request.save()
    _record(
        VaultAction.KEY_DESTRUCTION_WITHDRAWN if own else VaultAction.KEY_DESTRUCTION_REJECTED,
        actor=actor,
        key=key,
        details={"request": request.pk},
    )
    return request


@transaction.atomic
def symmetric_key_destruction_cancel(*, actor: Actor, key: SymmetricKey) -> SymmetricKey:
    """Stop a scheduled destruction; the key returns to the state it was in."""
    key = _locked(key)
    next_state(key.state, KeyAction.CANCEL_DESTRUCTION)
    key.state = key.state_before_destruction or KeyState.DEACTIVATED
    key.state_before_destruction = ""
    key.destroy_after = None
    if key.state == KeyState.ACTIVE and key.rotation_period_days:
        key.next_rotation_at = timezone.now() + timedelta(days=key.rotation_period_days)
    key.save()
    _record(VaultAction.KEY_DESTRUCTION_CANCELLED, actor=actor, key=key)
    return key


@transaction.atomic
def symmetric_key_destroy(
    *, actor: Actor, key: SymmetricKey, now: datetime | None = None
) -> SymmetricKey:
    """Erase every version's sealed material (crypto-shredding); metadata and audit stay.

    Only for a key whose waiting period is over at `now` (`destroy_due_keys` calls this).
    """
    key = _locked(key)
    next_state(key.state, KeyAction.DESTROY)
    now = now or timezone.now()
    if key.destroy_after is None or key.destroy_after > now:
        raise VaultError(f"{key.name} may not be destroyed before {key.destroy_after}")
    compromised = key.state_before_destruction == KeyState.COMPROMISED
    key.state = KeyState.DESTROYED_COMPROMISED if compromised else KeyState.DESTROYED
    key.destroyed_at = now
    key.save()
    # With the pkcs11 backend each version's wrapping key is destroyed in the token here,
    # inside the transaction and before the rows change: if the commit then fails, the key
    # is still due and the next run finishes it (a token object already gone is no error).
    # The other order could commit "destroyed" and leave a wrapping key behind that makes
    # every backup readable. The token cannot take part in the transaction either way.
    wrapping_keys_destroyed = 0
    for number, blob in key.versions.exclude(sealed_material=None).values_list(
        "number", "sealed_material"
    ):
        assert blob is not None  # the query excluded versions without material
        aad = KeyVersion(key_id=key.pk, number=number).aad
        wrapping_keys_destroyed += sealed_material_destroy(bytes(blob), aad=aad)
    key.versions.filter(state=VersionState.COMPROMISED).update(
        state=VersionState.DESTROYED_COMPROMISED,
        sealed_material=None,
        destroyed_at=now,
        is_primary=False,
    )
    key.versions.exclude(state__in=_DESTROYED_VERSION_STATES).update(
        state=VersionState.DESTROYED, sealed_material=None, destroyed_at=now, is_primary=False
    )
    backend = key_backend()
    _record(
        VaultAction.KEY_DESTROYED,
        actor=actor,
        key=key,
        details={
            "versions": key.versions.count(),
            "key_backend": backend.name,
            "wrapping_keys_destroyed": wrapping_keys_destroyed,
        },
    )
    # Scrub the table's storage once the erasure is committed (VACUUM cannot run inside a
    # transaction): the old row versions leave the live database files.
    transaction.on_commit(lambda: storage_scrub(model=KeyVersion))
    return key


# --- scheduled work (cron) --------------------------------------------------------------


def symmetric_keys_rotate_due(*, now: datetime | None = None) -> list[tuple[str, str]]:
    """Activate pre-active keys whose time has come and rotate keys past their rotation
    period. Each key in its own transaction; safe to run every minute (idempotent)."""
    now = now or timezone.now()
    done: list[tuple[str, str]] = []
    for key in SymmetricKey.objects.filter(state=KeyState.PRE_ACTIVE, activate_at__lte=now):
        try:
            symmetric_key_activate(actor=None, key=key)
            done.append((key.name, "activated"))
        except (VaultError, InvalidTransition):
            continue  # changed meanwhile (another node, a person): nothing to do
    for key in SymmetricKey.objects.filter(state=KeyState.ACTIVE, next_rotation_at__lte=now):
        with transaction.atomic():
            locked = _locked(key)
            if locked.state != KeyState.ACTIVE or not (
                locked.next_rotation_at and locked.next_rotation_at <= now
            ):
                continue  # rotated or changed by someone else since the query
            version = symmetric_key_rotate(actor=None, key=locked)
        done.append((key.name, f"rotated to version {version.number}"))
    return done


def symmetric_keys_destroy_due(*, now: datetime | None = None) -> list[str]:
    """Destroy keys whose waiting period is over. Each in its own transaction; idempotent."""
    now = now or timezone.now()
    destroyed = []
    for key in SymmetricKey.objects.filter(
        state=KeyState.PENDING_DESTRUCTION, destroy_after__lte=now
    ):
        try:
            symmetric_key_destroy(actor=None, key=key, now=now)
        except (VaultError, InvalidTransition):
            continue  # cancelled or destroyed meanwhile (another node, a person)
        destroyed.append(key.name)
    return destroyed


# --- integrity --------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionIntegrity:
    number: int
    ok: bool
    detail: str


def key_material_verify(*, actor: Actor, key: SymmetricKey) -> list[VersionIntegrity]:
    """Unseal every stored version and compare its key check value with the stored one.

    A failure is recorded as an error event naming the key and version and raised as
    KeyIntegrityError (the page shows the message, never a 500). The material is dropped
    as soon as its check value is computed.
    """
    results: list[VersionIntegrity] = []
    # Compromised material is never opened again, not even to check it.
    usable = key.versions.exclude(sealed_material=None).exclude(state=VersionState.COMPROMISED)
    for version in usable.order_by("number"):
        assert version.sealed_material is not None  # the query excluded versions without it
        try:
            material = unseal_material(bytes(version.sealed_material), aad=version.aad)
            matches = crypto_ops.fingerprint(key.key_type, material) == version.fingerprint
            del material
            results.append(
                VersionIntegrity(
                    version.number, matches, "ok" if matches else "fingerprint differs"
                )
            )
        except (EnvelopeError, KeyBackendError) as exc:
            results.append(VersionIntegrity(version.number, False, str(exc)))
    failed = [r for r in results if not r.ok]
    with transaction.atomic():
        _record(
            VaultAction.KEY_INTEGRITY_FAILED if failed else VaultAction.KEY_INTEGRITY_CHECKED,
            actor=actor,
            key=key,
            outcome=Outcome.ERROR if failed else Outcome.SUCCESS,
            details={
                "versions_checked": [r.number for r in results],
                "failed": [{"version": r.number, "problem": r.detail} for r in failed],
            },
        )
    if failed:
        names = ", ".join(f"version {r.number} ({r.detail})" for r in failed)
        raise KeyIntegrityError(f"sealed material of key {key.name} failed its check: {names}")
    return results
