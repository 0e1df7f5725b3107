"""Verifying the audit log: the chained (version 1) range with its checkpoints, then the
transparency tree (leaves, MACs, signed tree heads), exactly or through the database's fast
path (audit.verification). `audit_chain_check` answers; `audit_chain_verify` answers and
records that someone asked (``audit.verified``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from kmsportal.crypto.audit_chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    format_time,
    public_key_from_pem,
    verify_chain,
    verify_checkpoints,
)
from kmsportal.crypto.audit_log import (
    event_entry,
    event_mac_ok,
    key_id,
)
from kmsportal.crypto.merkle import Frontier, leaf_hash, perfect_levels

from .models import (
    AuditAction,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditLeaf,
    AuditRejectedEvent,
    AuditSigningKey,
    AuditTreeHead,
    Outcome,
)
from .sequencer import AuditTreeError, tree_head_json
from .services import (
    AuditTrustError,
    audit_event_record,
    audit_mac_keys_by_id,
    audit_trusted_keys,
)
from .verification import chain_check_fast, leaf_chunk_fast

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
