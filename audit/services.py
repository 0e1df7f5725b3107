"""Writing the audit log, signing checkpoints and verifying the chain.

`audit_event_record` is the only way events are written. It runs inside the caller's
transaction: if the caller's change rolls back, the event goes with it; if the event cannot
be written, the exception propagates and the caller's change rolls back (fail closed).

Lock order: a service changes its own rows first and records its event last. Recording
locks the chain head row until the caller's transaction ends, and takes no other lock, so
two writers can never wait on each other in a cycle.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from kmsportal.cli_actor import command_line_actor
from kmsportal.crypto.audit_chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    format_time,
    public_key_from_pem,
    public_key_to_pem,
    verify_chain,
    verify_checkpoints,
)
from kmsportal.crypto.audit_log import (
    event_entry,
    event_mac,
    event_mac_ok,
    key_id,
    public_key_from_text,
)
from kmsportal.crypto.canonical import MAX_SAFE_INTEGER, canonical_json
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.merkle import Frontier, leaf_hash, perfect_levels
from kmsportal.keyring.services import seal, unseal

from .context import request_meta
from .models import (
    ActorType,
    AuditAction,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditLeaf,
    AuditMacKey,
    AuditRejectedEvent,
    AuditSigningKey,
    AuditTreeHead,
    Outcome,
)
from .registry import audit_action_is_registered
from .sequencer import AuditTreeError, tree_head_json
from .verification import chain_check_fast, leaf_chunk_fast

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


def _next_sequence() -> tuple[int, str | None]:
    """A fresh event number and the id of the newest MAC key, in one round trip, without a
    lock held beyond this statement.

    PostgreSQL: the `audit_event_sequence` sequence (migration 0006): concurrent writers never
    wait on each other; numbers of rolled-back events are skipped. SQLite: max + 1, safe
    because every transaction there starts with the database's write lock (IMMEDIATE). The
    key id is read every time (not cached across transactions): a process never names a key
    row it has not seen committed.
    """
    events = connection.ops.quote_name(AuditEvent._meta.db_table)
    keys = connection.ops.quote_name(AuditMacKey._meta.db_table)
    newest_key = f"(SELECT id FROM {keys} ORDER BY created_at DESC LIMIT 1)"  # noqa: S608
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT nextval('audit_event_sequence'), {newest_key}")
        else:
            cursor.execute(
                f"SELECT coalesce(max(sequence), 0) + 1, {newest_key} FROM {events}"  # noqa: S608
            )
        number, key = cursor.fetchone()
    return int(number), None if key is None else str(uuid.UUID(str(key)))


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
        sequence, newest_key = _next_sequence()
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
# (_next_sequence), so an event never names a key row that is not in the database.
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


# --- version 1 checkpoints (kept for the chained range) ---------------------------------


def audit_checkpoint_create() -> AuditTreeHead | None:
    """Version 1 name of `audit_integrate`: integrate committed events and sign a tree head."""
    from .sequencer import audit_integrate

    return audit_integrate().head


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
    # How the version 1 chain was walked: "exact" (Python re-serialises every event) or the
    # fast path of the database ("sqlite", "postgresql", see audit.verification), and how
    # many ranges the fast path handed to the exact verifier, which found them sound.
    method: str = "exact"
    fallbacks: int = 0
    # Version 2: leaves checked, signed heads checked, the newest head's size, events not
    # yet integrated (each checked by its MAC).
    tree_size: int = 0
    heads_verified: int = 0
    latest_head_size: int | None = None
    pending: int = 0

    def as_details(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_verified": self.events_verified,
            "checkpoints_verified": self.checkpoints_verified,
            "head_sequence": self.head_sequence,
            "broken_at": self.broken_at,
            "problem": self.problem,
            "tree_size": self.tree_size,
            "heads_verified": self.heads_verified,
            "pending": self.pending,
        }


def _legacy_chain_check(*, exact: bool) -> VerificationReport:
    """The version 1 hash chain (events up to the frozen chain head) and its checkpoints."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(sequence=0)
    end = head.sequence
    if end == 0:
        return VerificationReport(True, 0, 0, 0, None, None)
    fast = (
        None
        if exact
        else chain_check_fast(from_sequence=1, expected_prev_hash=GENESIS_HASH, to_sequence=end)
    )
    if fast is None:
        chain = verify_chain(
            chain_rows(from_sequence=1, to_sequence=end), expected_prev_hash=GENESIS_HASH
        )
        method, fallbacks = "exact", 0
    else:
        chain, method, fallbacks = fast.chain, fast.method, fast.fallbacks
    how: dict[str, Any] = {"method": method, "fallbacks": fallbacks}
    if chain.ok and chain.first_sequence not in (None, 1):
        return VerificationReport(False, 0, 0, end, 1, "event 1 is missing", **how)
    if not chain.ok:
        return VerificationReport(
            False, chain.events_verified, 0, end, chain.broken_at, chain.problem, **how
        )
    last_sequence = chain.last_sequence or 0
    if last_sequence != end or chain.last_hash != head.hash:
        return VerificationReport(
            False,
            chain.events_verified,
            0,
            end,
            last_sequence + 1,
            f"the version 1 chain head is event {end} but the chain ends at event "
            f"{last_sequence} (tail truncated or rewritten)",
            **how,
        )
    checkpoints = list(AuditCheckpoint.objects.select_related("signing_key").order_by("sequence"))
    checked = 0
    if checkpoints:
        trusted = audit_trusted_keys()
        key_ids = {key_id(public_key_from_pem(c.signing_key.public_key_pem)) for c in checkpoints}
        if len(key_ids) != 1 or not key_ids <= trusted.keys():
            return VerificationReport(
                False,
                chain.events_verified,
                0,
                end,
                None,
                "version 1 checkpoints are signed by a key that is not trusted",
                **how,
            )
        wanted = [c.sequence for c in checkpoints]
        hashes = dict(
            AuditEvent.objects.filter(sequence__in=wanted).values_list("sequence", "hash")
        )
        result = verify_checkpoints(
            [c.chain_fields() for c in checkpoints],
            trusted[key_ids.pop()],
            event_hashes=hashes,
            expected_first_previous_signature="",
            last_event_sequence=last_sequence,
        )
        if not result.ok:
            return VerificationReport(
                False,
                chain.events_verified,
                result.checkpoints_verified,
                end,
                result.broken_at,
                result.problem,
                **how,
            )
        checked = result.checkpoints_verified
    return VerificationReport(True, chain.events_verified, checked, end, None, None, **how)


_LEAF_COLUMNS = (
    "leaf_index",
    "leaf_hash",
    *(f"event__{f}" for f in EVENT_FIELDS),
    "event__prev_hash",
)


def _leaf_exact_row(row: tuple[Any, ...]) -> tuple[str | None, int | None]:
    """Check one leaf row (`_LEAF_COLUMNS`) with the exact Python serialisation."""
    index, stored = row[0], bytes(row[1])
    fields = dict(zip(EVENT_FIELDS, row[2:-1], strict=True))
    fields["time"] = format_time(fields["time"])
    sequence = fields["sequence"]
    try:
        digest = leaf_hash(event_entry(fields))
    except (TypeError, ValueError) as exc:
        return f"event {sequence} cannot be serialised: {exc}", sequence
    if digest != stored:
        return (
            f"event {sequence} (leaf {index}): its content does not give its leaf hash "
            "(content altered)",
            sequence,
        )
    return None, None


def _leaf_exact(index: int, stored: bytes) -> tuple[str | None, int | None]:
    row = AuditLeaf.objects.filter(leaf_index=index).values_list(*_LEAF_COLUMNS).first()
    if row is None or bytes(row[1]) != stored:
        return f"leaf {index} changed while it was verified", None
    return _leaf_exact_row(row)


def _tree_check(trusted: dict[str, Ed25519PublicKey], legacy_end: int) -> dict[str, Any]:
    """Leaves, signed heads, rotation records and pending events; a dict of report fields."""
    heads = list(AuditTreeHead.objects.order_by("tree_size"))
    head_at = {h.tree_size: h for h in heads}
    frontier = Frontier()
    rotations: dict[str, int] = {}  # key id introduced by a rotation -> its leaf index
    verified_heads = 0

    def check_head(head: AuditTreeHead) -> str | None:
        signed = tree_head_json(head)
        problem = signed.verify(trusted)
        if problem:
            return problem
        if head.key_id != key_id(public_key_from_pem(head.signing_key.public_key_pem)):
            return f"the tree head of size {head.tree_size} names another key than its row"
        if frontier.root().hex() != head.root_hash:
            return (
                f"the first {head.tree_size} leaves do not hash to the signed root of that head "
                "(an event was altered, removed, inserted or reordered)"
            )
        return None

    def broken(problem: str, at: int | None = None) -> dict[str, Any]:
        return {
            "ok": False,
            "problem": problem,
            "broken_at": at,
            "tree_size": frontier.size,
            "heads_verified": verified_heads,
        }

    if 0 in head_at:
        if problem := check_head(head_at[0]):
            return broken(problem)
        verified_heads += 1
    key_rows = {str(row.pk): row for row in AuditSigningKey.objects.all()}
    head_keys = {h.tree_size: key_rows[str(h.signing_key_id)] for h in heads}
    for index, details in AuditLeaf.objects.filter(
        event__action=AuditAction.AUDIT_SIGNING_KEY_ROTATED
    ).values_list("leaf_index", "event__details"):
        new_key = details.get("key_id") if isinstance(details, dict) else None
        if isinstance(new_key, str):
            rotations.setdefault(new_key, index)
    top = AuditLeaf.objects.aggregate(top=Max("leaf_index"))["top"]
    top = -1 if top is None else top
    chunk = 1 << 14  # a power of two: every chunk starts where the frontier is whole
    for lo in range(0, top + 1, chunk):
        hi = min(lo + chunk - 1, top)
        fast = leaf_chunk_fast(lo, hi)
        if fast is None:
            digests = None
        else:
            digests = fast.digests
            for index in fast.suspects:  # the exact serialisation decides
                problem, at = _leaf_exact(index, digests[index - lo])
                if problem:
                    return broken(problem, at)
        if digests is None:  # no fast path, or leaves missing: walk exactly, naming the problem
            digests = []
            last = lo - 1
            while last < hi:
                rows = list(
                    AuditLeaf.objects.filter(leaf_index__gt=last, leaf_index__lte=hi)
                    .order_by("leaf_index")
                    .values_list(*_LEAF_COLUMNS)[:5000]
                )
                if not rows:
                    break
                for row in rows:
                    index, stored = row[0], bytes(row[1])
                    expected = lo + len(digests)
                    if index != expected:
                        return broken(
                            f"leaf {expected} is missing (leaf {index} follows it): leaves "
                            "deleted or renumbered",
                            row[2],
                        )
                    problem, at = _leaf_exact_row(row)
                    if problem:
                        return broken(problem, at)
                    digests.append(stored)
                last = rows[-1][0]
            if len(digests) != hi - lo + 1:
                return broken(f"leaf {lo + len(digests)} is missing: leaves deleted")
        # The chunk's perfect subtrees in bulk; heads inside it are checked from them.
        levels = perfect_levels(digests)
        base = Frontier(frontier.size, list(frontier.hashes))
        for size in sorted(s for s in head_at if lo < s <= hi + 1):
            inside = Frontier(base.size, list(base.hashes))
            for level, index in Frontier.positions(size - lo):
                inside.append_perfect(level, levels[level][index])
            frontier = inside
            if problem := check_head(head_at[size]):
                return broken(problem)
            verified_heads += 1
        frontier = base
        for level, index in Frontier.positions(hi + 1 - lo):
            frontier.append_perfect(level, levels[level][index])
    if heads and heads[-1].tree_size > frontier.size:
        return broken(
            f"a signed head covers {heads[-1].tree_size} leaves but only {frontier.size} exist "
            "(the log was truncated)"
        )
    if verified_heads != len(heads):
        return broken("a signed head does not match the tree at its size")
    # Every key but the first is introduced by a rotation record inside an earlier head.
    first_key = None
    for size, row in sorted(head_keys.items()):
        kid = key_id(public_key_from_pem(row.public_key_pem))
        if first_key is None:
            first_key = kid
            continue
        if kid != first_key and not (kid in rotations and rotations[kid] < size):
            return broken(
                f"the tree head of size {size} is signed by key {kid[:16]}…, which no rotation "
                "record in the log introduced"
            )
    covered = heads[-1].tree_size if heads else 0
    if frontier.size > covered:
        # Only the migrated version 1 leaves may wait for the first head.
        uncovered = (
            AuditLeaf.objects.filter(leaf_index__gte=covered).exclude(event__prev_hash="").count()
        )
        if uncovered != frontier.size - covered:
            return broken(f"leaves {covered}..{frontier.size - 1} are not covered by a signed head")
    # Events not yet integrated: each must carry a valid MAC; rejected ones are evidence.
    rejected = AuditRejectedEvent.objects.order_by("event_id").first()
    if rejected is not None:
        return broken(
            f"event {rejected.event_id} was rejected by the sequencer: {rejected.reason}",
            rejected.event_id,
        )
    pending = list(AuditEvent.objects.filter(leaf__isnull=True).order_by("sequence"))
    keys = audit_mac_keys_by_id({str(e.mac_key_id) for e in pending if e.mac_key_id})
    for event in pending:
        key = keys.get(str(event.mac_key_id)) if event.mac_key_id else None
        if key is None or not event_mac_ok(key, event_entry(event.chain_fields()), event.mac):
            return broken(
                f"event {event.sequence} (not yet in the tree) has no valid MAC: forged or "
                "altered by someone without the master keyring",
                event.sequence,
            )
    return {
        "ok": True,
        "problem": None,
        "broken_at": None,
        "tree_size": frontier.size,
        "heads_verified": verified_heads,
        "pending": len(pending),
        "latest_head_size": heads[-1].tree_size if heads else None,
    }


def audit_chain_check(*, from_sequence: int = 1, exact: bool = False) -> VerificationReport:
    """Verify the whole log; report the first problem. Writes nothing.

    1. The trust anchor: every signing key in the database must match its keyring-sealed
       private key and, when KMS_AUDIT_PUBLIC_KEYS is set, be pinned there.
    2. The version 1 chain and checkpoints (events before migration 0006).
    3. The tree: every leaf's event gives its leaf hash, leaves are contiguous, every signed
       head's signature verifies with a trusted key and its root is the tree's at its size,
       every key after the first was introduced by a rotation record, no head is beyond the
       leaves (truncation).
    4. Events not yet integrated: each MAC verifies; none was rejected by the sequencer.
    `from_sequence` is accepted for compatibility; the whole log is always checked.
    """
    try:
        trusted = audit_trusted_keys()
    except AuditTrustError as exc:
        return VerificationReport(False, 0, 0, 0, None, f"trust anchor: {exc}")
    legacy = _legacy_chain_check(exact=exact)
    if not legacy.ok:
        return legacy
    try:
        tree = _tree_check(trusted, legacy.head_sequence)
    except AuditTreeError as exc:
        tree = {
            "ok": False,
            "problem": str(exc),
            "broken_at": None,
            "tree_size": 0,
            "heads_verified": 0,
        }
    events = AuditEvent.objects.count()
    return VerificationReport(
        tree["ok"],
        events if tree["ok"] else legacy.events_verified,
        legacy.checkpoints_verified,
        legacy.head_sequence,
        tree["broken_at"],
        tree["problem"],
        legacy.method,
        legacy.fallbacks,
        tree["tree_size"],
        tree["heads_verified"],
        tree.get("latest_head_size"),
        tree.get("pending", 0),
    )


def audit_chain_verify(
    *, actor: User | None, from_sequence: int = 1, exact: bool = False
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
