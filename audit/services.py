"""Writing the audit log, signing checkpoints and verifying the chain.

`audit_event_record` is the only way events are written. It runs inside the caller's
transaction: if the caller's change rolls back, the event goes with it; if the event cannot
be written, the exception propagates and the caller's change rolls back (fail closed).

Lock order: a service changes its own rows first and records its event last. Recording
locks the chain head row until the caller's transaction ends, and takes no other lock, so
two writers can never wait on each other in a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone

from kmsportal.cli_actor import command_line_actor
from kmsportal.crypto.audit_chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    canonical_json,
    checkpoint_payload,
    checkpoint_sign,
    event_canonical_bytes,
    event_hash,
    format_time,
    public_key_from_pem,
    public_key_to_pem,
    verify_chain,
    verify_checkpoints,
)
from kmsportal.keyring.services import seal, unseal

from .context import request_meta
from .models import (
    ActorType,
    AuditAction,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditSigningKey,
    Outcome,
)
from .registry import audit_action_is_registered
from .verification import chain_check_fast

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


class AuditChainError(RuntimeError):
    """The chain cannot be appended to safely (for example its head row is missing)."""


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
    elif isinstance(value, float) or not (value is None or isinstance(value, str | int | bool)):
        # Floats do not survive every database's JSON type byte for byte; the hash must.
        raise AuditDetailsError(f"{path}: {type(value).__name__} is not an auditable value")


def _actor_fields(
    actor: AbstractBaseUser | models.Model | None, *, anonymous: bool, actor_name: str | None
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


def _head_locked() -> AuditChainHead:
    """The chain head row, locked until the transaction ends.

    Serialises appends: a second writer waits here until the first commits, then reads the
    new head (PostgreSQL re-reads a row locked FOR UPDATE after the wait).
    """
    try:
        return AuditChainHead.objects.select_for_update().get(pk=1)
    except AuditChainHead.DoesNotExist:
        # Created by a migration; only an empty log may start a new one. A missing head
        # with events present means tampering: refuse to append (fail closed).
        if AuditEvent.objects.exists():
            raise AuditChainError("the audit chain head is missing; run verify_audit") from None
        AuditChainHead.objects.get_or_create(pk=1)
        return AuditChainHead.objects.select_for_update().get(pk=1)


def audit_event_record(
    *,
    action: AuditAction | str,
    outcome: Outcome | str = Outcome.SUCCESS,
    actor: AbstractBaseUser | models.Model | None = None,
    anonymous: bool = False,
    actor_name: str | None = None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    `actor` is a user, a client service, or None for the system (`anonymous=True` for a
    request without a signed-in user). `target` fills target type/id/label from a model
    instance. `details` is JSON (str, int, bool, None, lists, dicts) and never holds secrets.
    Source IP and request id come from the current request, if any.
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
    # append that fails marks the whole transaction for rollback, so the change it records
    # cannot commit without it even if the caller catches the error (fail closed). Called
    # outside a transaction, this is the transaction.
    with transaction.atomic(savepoint=False):
        head = _head_locked()
        event = AuditEvent(
            sequence=head.sequence + 1,
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
            prev_hash=head.hash,
        )
        event.hash = event_hash(head.hash, event_canonical_bytes(event.chain_fields()))
        event.save()
        AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
        every = settings.AUDIT_CHECKPOINT_EVERY
        if every and event.sequence % every == 0:
            _checkpoint_sign(sequence=event.sequence, hash=event.hash)
    return event


# --- signing key ------------------------------------------------------------------------

_signing_lock = threading.Lock()
# Loaded once per process: (key row id, private key object).
_signing_cache: tuple[str, Ed25519PrivateKey] | None = None


@transaction.atomic
def audit_signing_key_ensure() -> tuple[AuditSigningKey, bool]:
    """The checkpoint signing key, generated (and sealed) if none exists. Returns (key, created)."""
    existing = AuditSigningKey.objects.first()
    if existing is not None:
        return existing, False
    private_key = Ed25519PrivateKey.generate()
    row = AuditSigningKey(
        public_key_pem=public_key_to_pem(private_key.public_key()), sealed_private_key=b""
    )
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    row.sealed_private_key = seal(raw, aad=row.aad)
    row.save(force_insert=True)
    audit_event_record(
        action=AuditAction.AUDIT_SIGNING_KEY_CREATED,
        target=row,
        details={"algorithm": "ed25519", "public_key_pem": row.public_key_pem},
    )
    return row, True


def _signing_key() -> tuple[AuditSigningKey, Ed25519PrivateKey]:
    global _signing_cache
    row, _ = audit_signing_key_ensure()
    with _signing_lock:
        if _signing_cache is None or _signing_cache[0] != str(row.pk):
            raw = unseal(bytes(row.sealed_private_key), aad=row.aad)
            _signing_cache = (str(row.pk), Ed25519PrivateKey.from_private_bytes(raw))
        return row, _signing_cache[1]


def _checkpoint_sign(*, sequence: int, hash: str) -> AuditCheckpoint:
    """Sign (sequence, hash, time, previous signature); caller holds the chain head lock."""
    row, private_key = _signing_key()
    previous = AuditCheckpoint.objects.order_by("-sequence").first()
    now = timezone.now()
    previous_signature = previous.signature if previous else ""
    payload = checkpoint_payload(
        sequence=sequence,
        event_hash=hash,
        time=format_time(now),
        previous_signature=previous_signature,
    )
    checkpoint = AuditCheckpoint(
        sequence=sequence,
        hash=hash,
        time=now,
        previous_signature=previous_signature,
        signature=checkpoint_sign(private_key, payload),
        signing_key=row,
    )
    checkpoint.save(force_insert=True)
    return checkpoint


@transaction.atomic
def audit_checkpoint_create() -> AuditCheckpoint | None:
    """Sign a checkpoint at the current head; None when the head is already checkpointed.

    Idempotent, safe from cron: checkpoint sequences must strictly increase, so nothing is
    signed unless events were appended since the last checkpoint.
    """
    head = _head_locked()
    if head.sequence == 0:
        return None
    last = AuditCheckpoint.objects.order_by("-sequence").first()
    if last is not None and last.sequence >= head.sequence:
        return None
    checkpoint = _checkpoint_sign(sequence=head.sequence, hash=head.hash)
    # Recorded after signing, so this event is covered by the next checkpoint.
    audit_event_record(
        action=AuditAction.AUDIT_CHECKPOINT,
        target=checkpoint,
        details={"sequence": checkpoint.sequence, "hash": checkpoint.hash},
    )
    return checkpoint


# --- verification -----------------------------------------------------------------------

# The hashed fields (in the order kmsportal.crypto.audit_chain defines) and the two hashes.
_CHAIN_COLUMNS = (*EVENT_FIELDS, "prev_hash", "hash")


def chain_rows(
    *, from_sequence: int = 1, to_sequence: int | None = None, chunk_size: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every event from `from_sequence` (to `to_sequence`, if given) in order, as chain dicts,
    streamed in chunks.

    Keyset-paged (WHERE sequence > last ORDER BY sequence LIMIT n) so memory stays constant
    and no server-side cursor has to stay open across the walk.
    """
    last = from_sequence - 1
    events = AuditEvent.objects.all()
    if to_sequence is not None:
        events = events.filter(sequence__lte=to_sequence)
    while True:
        rows = list(
            events.filter(sequence__gt=last)
            .order_by("sequence")
            .values_list(*_CHAIN_COLUMNS)[:chunk_size]
        )
        if not rows:
            return
        for row in rows:
            event = dict(zip(_CHAIN_COLUMNS, row, strict=True))
            event["time"] = format_time(event["time"])
            yield event
        last = rows[-1][0]


@dataclass(frozen=True)
class VerificationReport:
    ok: bool
    events_verified: int
    checkpoints_verified: int
    head_sequence: int
    broken_at: int | None
    problem: str | None
    # How the chain was walked: "exact" (Python re-serialises every event) or the fast path
    # of the database ("sqlite", "postgresql", see audit.verification), and how many ranges
    # the fast path handed to the exact verifier, which found them sound.
    method: str = "exact"
    fallbacks: int = 0

    def as_details(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_verified": self.events_verified,
            "checkpoints_verified": self.checkpoints_verified,
            "head_sequence": self.head_sequence,
            "broken_at": self.broken_at,
            "problem": self.problem,
        }


def audit_chain_check(*, from_sequence: int = 1, exact: bool = False) -> VerificationReport:
    """Walk the chain and the checkpoints; report the first broken link. Writes nothing.

    The chain is walked by the database's fast path (audit.verification), which hands
    anything it cannot vouch for to the exact verifier; `exact=True` uses only the exact
    verifier, which trusts nothing the database computes (and is ~10x slower).
    """
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(sequence=0)
    if from_sequence > 1:
        before = AuditEvent.objects.filter(sequence=from_sequence - 1).values_list(
            "hash", flat=True
        )
        expected = before.first()
        if expected is None:
            return VerificationReport(
                False,
                0,
                0,
                head.sequence,
                from_sequence - 1,
                f"event {from_sequence - 1} is missing",
            )
    else:
        expected = GENESIS_HASH
    fast = (
        None
        if exact
        else chain_check_fast(from_sequence=from_sequence, expected_prev_hash=expected)
    )
    if fast is None:
        chain = verify_chain(chain_rows(from_sequence=from_sequence), expected_prev_hash=expected)
        method, fallbacks = "exact", 0
    else:
        chain, method, fallbacks = fast.chain, fast.method, fast.fallbacks
    how = {"method": method, "fallbacks": fallbacks}
    if chain.ok and chain.first_sequence not in (None, from_sequence):
        return VerificationReport(
            False, 0, 0, head.sequence, from_sequence, f"event {from_sequence} is missing", **how
        )
    if not chain.ok:
        return VerificationReport(
            False, chain.events_verified, 0, head.sequence, chain.broken_at, chain.problem, **how
        )
    last_sequence = chain.last_sequence or (from_sequence - 1)
    # The head row names the newest event: a log that ends earlier lost its tail.
    if head.sequence != last_sequence or (head.sequence and head.hash != chain.last_hash):
        return VerificationReport(
            False,
            chain.events_verified,
            0,
            head.sequence,
            last_sequence + 1,
            f"the chain head is event {head.sequence} but the log ends at event "
            f"{last_sequence} (tail truncated or rewritten)",
            **how,
        )
    checkpoints = [c.chain_fields() for c in AuditCheckpoint.objects.order_by("sequence")]
    key = AuditSigningKey.objects.first()
    if checkpoints and key is None:
        return VerificationReport(
            False,
            chain.events_verified,
            0,
            head.sequence,
            None,
            "checkpoints exist but the audit signing key is missing",
            **how,
        )
    checked = 0
    if checkpoints:
        wanted = [c["sequence"] for c in checkpoints]
        hashes = dict(
            AuditEvent.objects.filter(sequence__in=wanted).values_list("sequence", "hash")
        )
        result = verify_checkpoints(
            checkpoints,
            public_key_from_pem(key.public_key_pem),
            event_hashes=hashes,
            expected_first_previous_signature="",
            last_event_sequence=last_sequence,
        )
        if not result.ok:
            return VerificationReport(
                False,
                chain.events_verified,
                result.checkpoints_verified,
                head.sequence,
                result.broken_at,
                result.problem,
                **how,
            )
        checked = result.checkpoints_verified
    return VerificationReport(
        True, chain.events_verified, checked, head.sequence, None, None, **how
    )


def audit_chain_verify(
    *, actor: AbstractBaseUser | None, from_sequence: int = 1, exact: bool = False
) -> VerificationReport:
    """Verify the chain and record that it was done, with the result, as an audit event."""
    report = audit_chain_check(from_sequence=from_sequence, exact=exact)
    with transaction.atomic():
        audit_event_record(
            action=AuditAction.AUDIT_VERIFIED,
            outcome=Outcome.SUCCESS if report.ok else Outcome.ERROR,
            actor=actor,
            target_type="audit.AuditChain",
            target_label="audit chain",
            details={**report.as_details(), "from_sequence": from_sequence},
        )
    return report


@transaction.atomic
def audit_export_start(*, actor: AbstractBaseUser, fmt: str, filters: dict[str, Any]) -> None:
    """Record an export before its first byte is streamed (fail closed), and make sure the
    signing key whose public half ends the export exists."""
    audit_signing_key_ensure()
    audit_event_record(
        action=AuditAction.AUDIT_EXPORTED,
        actor=actor,
        target_type="audit.AuditChain",
        target_label="audit log export",
        details={"format": fmt, "filters": filters},
    )


def details_json(details: dict[str, Any]) -> str:
    """Details as canonical JSON text, for display and CSV export."""
    return canonical_json(details).decode("utf-8")
