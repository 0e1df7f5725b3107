"""The sequencer: integrates committed events into the Merkle tree and signs tree heads.

Like Trillian's sequencer/signer: appends (audit.services.audit_event_record) only insert
their event; this takes the committed ones in batches, checks each event's MAC, gives them
leaf indexes 0, 1, 2, ..., stores the perfect subtrees they complete and signs a head, all in
one transaction. One sequencer at a time across every node (kmsportal.locks: a PostgreSQL
advisory lock, a file lock on SQLite); the others skip.

It runs by itself: every web process starts a daemon thread on its first request
(`sequencer_thread_start`, KMS_AUDIT_SEQUENCER_INTERVAL seconds apart, 0 turns it off);
`manage.py audit_head` and the tests call `audit_integrate()` directly.

Invariants:
- A leaf is written only for an event whose MAC verifies under its keyring-sealed key;
  an event whose MAC does not verify is recorded in AuditRejectedEvent, never integrated.
- Before extending the tree, the stored right edge must give the latest signed root: a tree
  changed in the database is never signed over.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Max
from django.utils import timezone

from kmsportal.crypto.audit_chain import format_time
from kmsportal.crypto.audit_log import TreeHead, event_entry, event_mac_ok, tree_head_sign
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    subtree_from_perfect,
)
from kmsportal.locks import exclusive_job

from .models import (
    AuditAction,
    AuditEvent,
    AuditLeaf,
    AuditRejectedEvent,
    AuditSigningKey,
    AuditTreeHead,
    AuditTreeNode,
    Outcome,
    tree_node_key,
)

logger = logging.getLogger(__name__)

# The lock of version 1's `audit_checkpoint` job: during a rolling upgrade old nodes' cron
# runs and new nodes' sequencers still take turns.
JOB = "audit_checkpoint"
# Events are numbered before they commit, so one may commit after a higher number was
# integrated; a routine run looks back this many numbers, a full run (commands, tests, every
# FULL_SCAN_EVERY thread runs) looks at every event.
LOOKBACK = 100_000
FULL_SCAN_EVERY = 30


class AuditTreeError(KMSError, RuntimeError):
    """The stored tree does not match its latest signed head: nothing is signed."""

    code = "audit_tree_mismatch"
    status = 500


@dataclass(frozen=True)
class IntegrationResult:
    head: AuditTreeHead | None  # the newest head after this run (None: no head at all)
    integrated: int
    rejected: int
    skipped: bool = False  # another sequencer held the lock


def tree_head_json(head: AuditTreeHead) -> TreeHead:
    """A stored head as the signed object of kmsportal.crypto.audit_log."""
    return TreeHead(
        head.tree_size, head.root_hash, format_time(head.timestamp), head.key_id, head.signature
    )


def tree_size() -> int:
    """Leaves in the tree (the highest leaf index + 1)."""
    top = AuditLeaf.objects.aggregate(top=Max("leaf_index"))["top"]
    return 0 if top is None else top + 1


def perfect_hashes(positions: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Stored hashes of perfect subtrees ``(level, index)``, level 0 being the leaves, read in
    one query (a proof at a million leaves needs a few dozen)."""
    positions = set(positions)
    leaves = [index for level, index in positions if level == 0]
    keys = {tree_node_key(level, index): (level, index) for level, index in positions if level}
    out: dict[tuple[int, int], bytes] = {}
    rows = AuditLeaf.objects.filter(leaf_index__in=leaves or [-1]).values_list(
        "leaf_index", "leaf_hash"
    )
    nodes = AuditTreeNode.objects.filter(key__in=list(keys) or [-1]).values_list("key", "hash")
    for number, digest in rows.union(nodes, all=True):
        # Leaf indexes are below 2**48; node keys carry their level (>= 1) above that.
        position = keys.get(number) if number >> 48 else (0, number)
        if position is not None:
            out[position] = bytes(digest)
    missing = positions - out.keys()
    if missing:
        raise AuditTreeError(f"stored tree nodes are missing: {sorted(missing)[:3]}")
    return out


def _frontier(size: int) -> Frontier:
    positions = Frontier.positions(size)
    hashes = perfect_hashes(positions)
    return Frontier(size, [hashes[p] for p in positions])


def _with_stored_nodes(
    compute: Callable[[Callable[[int, int], bytes]], list[bytes]],
) -> list[bytes]:
    """Run a proof algorithm twice: once to learn which perfect subtrees it reads, once with
    their stored hashes fetched in one query per table."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(32)

    compute(subtree_from_perfect(record))
    hashes = perfect_hashes(wanted)
    return compute(subtree_from_perfect(lambda level, index: hashes[(level, index)]))


def proof_inclusion(index: int, size: int) -> list[bytes]:
    """RFC 9162 audit path of leaf ``index`` in the tree of ``size`` leaves, from stored nodes."""
    return _with_stored_nodes(lambda subtree: inclusion_proof(index, size, subtree))


def proof_consistency(first: int, second: int) -> list[bytes]:
    """RFC 9162 consistency proof from size ``first`` to size ``second``, from stored nodes."""
    return _with_stored_nodes(lambda subtree: consistency_proof(first, second, subtree))


def latest_head() -> AuditTreeHead | None:
    return AuditTreeHead.objects.select_related("signing_key").order_by("-tree_size").first()


def audit_integrate(
    *,
    wait: bool = True,
    full: bool = True,
    batch_size: int = 5000,
    sign_with: AuditSigningKey | None = None,
) -> IntegrationResult:
    """Integrate every committed, not yet integrated event and sign a new tree head.

    ``wait=False`` returns at once (``skipped``) when another sequencer runs; ``full=False``
    looks only at recent event numbers (see LOOKBACK). ``sign_with`` signs with that key
    instead of the newest (key rotation). Idempotent: with nothing new, signs nothing.
    """
    integrated = rejected = 0
    while True:
        # The lock inside the batch's transaction: on PostgreSQL a transaction-level advisory
        # lock, released at commit or rollback (safe behind PgBouncer's transaction pooling).
        with transaction.atomic(), exclusive_job(JOB, wait=wait) as acquired:
            if not acquired:
                return IntegrationResult(latest_head(), integrated, rejected, skipped=True)
            done, refused = _integrate_batch(batch_size, full=full, sign_with=sign_with)
        integrated += done
        rejected += refused
        if done + refused < batch_size:
            break
    return IntegrationResult(latest_head(), integrated, rejected)


def _pending(batch_size: int, *, full: bool) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(leaf__isnull=True, rejection__isnull=True)
    if not full:
        top = AuditLeaf.objects.aggregate(top=Max("event_id"))["top"]
        if top is not None:
            events = events.filter(sequence__gt=top - LOOKBACK)
    return list(events.order_by("sequence")[:batch_size])


def _integrate_batch(
    batch_size: int, *, full: bool, sign_with: AuditSigningKey | None
) -> tuple[int, int]:
    from .services import (
        audit_event_record,
        audit_mac_keys_by_id,
    )

    size = tree_size()
    frontier = _frontier(size)
    head = latest_head()
    # Before the first head only the leaves migration 0006 made from chained events exist.
    if head is None and size and AuditLeaf.objects.filter(event__prev_hash="").exists():
        raise AuditTreeError(
            "leaves exist that no signed head covers and that are not migrated version 1 "
            "events (written into the database directly): nothing signed; run verify_audit"
        )
    if head is not None:
        if head.tree_size < size:
            raise AuditTreeError(
                f"{size - head.tree_size} leaves beyond the latest signed head were written "
                "into the database directly: nothing signed; run verify_audit"
            )
        if head.tree_size > size:
            raise AuditTreeError(
                f"the latest signed head covers {head.tree_size} leaves but only {size} are "
                "stored (leaves deleted): nothing signed; run verify_audit"
            )
        if head.tree_size == size and frontier.root().hex() != head.root_hash:
            raise AuditTreeError(
                "the stored tree does not give the latest signed root (the tree was changed "
                "in the database): nothing signed; run verify_audit"
            )
    events = _pending(batch_size, full=full)
    keys = audit_mac_keys_by_id({str(e.mac_key_id) for e in events if e.mac_key_id})
    leaves: list[AuditLeaf] = []
    nodes: list[AuditTreeNode] = []
    refused: list[tuple[AuditEvent, str]] = []
    for event in events:
        entry = event_entry(event.chain_fields())
        key = keys.get(str(event.mac_key_id)) if event.mac_key_id else None
        if key is None:
            refused.append((event, "no MAC under a keyring-sealed key"))
            continue
        if not event_mac_ok(key, entry, event.mac):
            refused.append((event, "MAC does not verify (forged or altered)"))
            continue
        digest = leaf_hash(entry)
        if digest.hex() != event.hash:
            refused.append((event, "stored leaf hash does not match the event"))
            continue
        leaves.append(
            AuditLeaf(leaf_index=frontier.size, event_id=event.sequence, leaf_hash=digest)
        )
        for level, index, node in frontier.append(digest):
            nodes.append(AuditTreeNode(key=tree_node_key(level, index), hash=node))
    now = timezone.now()
    AuditLeaf.objects.bulk_create(leaves)
    AuditTreeNode.objects.bulk_create(nodes)
    for event, reason in refused:
        AuditRejectedEvent(event=event, reason=reason, time=now).save()
        logger.error("audit event %s rejected by the sequencer: %s", event.sequence, reason)
        audit_event_record(
            action=AuditAction.AUDIT_EVENT_REJECTED,
            outcome=Outcome.ERROR,
            target_type="audit.AuditEvent",
            target_id=str(event.sequence),
            target_label=f"audit event {event.sequence}",
            details={"reason": reason},
        )
    if head is None and frontier.size == 0:
        return 0, len(refused)
    if head is None or frontier.size > head.tree_size:
        tree_head_store(frontier, now=now, sign_with=sign_with)
    return len(leaves), len(refused)


def tree_head_store(frontier: Frontier, *, now, sign_with=None) -> AuditTreeHead:  # type: ignore[no-untyped-def]
    """Sign and store the head of the tree ``frontier`` describes (the caller holds the
    sequencer's lock, in the transaction that stored its leaves)."""
    from .services import _signing_key, audit_signing_key_private

    if sign_with is not None:
        row, private_key = sign_with, audit_signing_key_private(sign_with)
    else:
        row, private_key = _signing_key()
    signed = tree_head_sign(
        private_key,
        tree_size=frontier.size,
        root_hash=frontier.root().hex(),
        timestamp=format_time(now),
    )
    head = AuditTreeHead(
        tree_size=signed.tree_size,
        root_hash=signed.root_hash,
        timestamp=now,
        key_id=signed.key_id,
        signature=signed.signature,
        signing_key=row,
    )
    head.save()
    return head


# --------------------------------------------------------------------------- the thread

_thread_lock = threading.Lock()
_thread_pid: int | None = None
_thread: threading.Thread | None = None
_stop = threading.Event()


def sequencer_interval() -> float:
    return float(getattr(settings, "KMS_AUDIT_SEQUENCER_INTERVAL", 0) or 0)


def sequencer_thread_start() -> bool:
    """Start this process's sequencer thread once (after a fork, again); False if turned off."""
    global _thread_pid, _thread
    interval = sequencer_interval()
    if interval <= 0:
        return False
    with _thread_lock:
        if _thread_pid == os.getpid():
            return True
        _thread_pid = os.getpid()
        _stop.clear()
        _thread = threading.Thread(
            target=_run_forever, args=(interval,), name="audit-sequencer", daemon=True
        )
        _thread.start()
    return True


def sequencer_thread_stop() -> None:
    """Stop this process's sequencer thread (tests; a process exiting just drops it)."""
    global _thread_pid, _thread
    with _thread_lock:
        thread, _thread, _thread_pid = _thread, None, None
        _stop.set()
    if thread is not None:
        thread.join(timeout=30)


def _run_forever(interval: float) -> None:
    runs = 0
    while not _stop.wait(interval):
        runs += 1
        try:
            audit_integrate(wait=False, full=runs % FULL_SCAN_EVERY == 1)
        except Exception:  # keep running; the error is logged and the next run retries
            logger.exception("audit sequencer run failed")
        finally:
            connections.close_all()  # this thread's own connections only
