"""Reads of the audit log for the auditor's pages and exports.

Lists are keyset-paginated on the sequence number (WHERE sequence < cursor ORDER BY sequence
DESC LIMIT n): the cost of a page does not grow with the table, and no page counts rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from kmsportal.crypto.audit_log import TreeHead

from .models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditSigningKey, AuditTreeHead


@dataclass(frozen=True)
class EventFilters:
    """What an auditor narrowed the log to; empty values mean no filter."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    outcome: str = ""
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Non-empty filters, JSON-ready (for the export header and the audit event)."""
        values = {
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "actor": self.actor,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "outcome": self.outcome,
            "text": self.text,
        }
        return {key: value for key, value in values.items() if value}


def _can_read(user: User | AnonymousUser) -> bool:
    return user.has_perm("audit.view_auditevent")


def audit_event_queryset(
    *, user: User | AnonymousUser, filters: EventFilters
) -> QuerySet[AuditEvent]:
    """Events visible to `user` matching `filters`, newest first (an anonymous user sees none,
    unless it is a command's stand-in that holds the permission: audit_export)."""
    if not _can_read(user):
        return AuditEvent.objects.none()
    queryset = AuditEvent.objects.all()
    if filters.since:
        queryset = queryset.filter(time__gte=filters.since)
    if filters.until:
        queryset = queryset.filter(time__lt=filters.until)
    if filters.actor:
        queryset = queryset.filter(actor_name=filters.actor)
    if filters.action:
        queryset = queryset.filter(action=filters.action)
    if filters.target_type:
        queryset = queryset.filter(target_type=filters.target_type)
    if filters.target_id:
        queryset = queryset.filter(target_id=filters.target_id)
    if filters.outcome:
        queryset = queryset.filter(outcome=filters.outcome)
    if filters.text:
        queryset = queryset.filter(Q(target_label__icontains=filters.text))
    return queryset.order_by("-sequence")


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    newer_cursor: int | None  # pass as ?after= to see newer events
    older_cursor: int | None  # pass as ?before= to see older events


def audit_event_page(
    *,
    user: User,
    filters: EventFilters,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> EventPage:
    """One page of events, newest first, around a sequence cursor."""
    queryset = audit_event_queryset(user=user, filters=filters)
    if after is not None:
        # Newer page: walk upwards from the cursor, then show newest first.
        rows = list(queryset.filter(sequence__gt=after).order_by("sequence")[: size + 1])
        has_more_newer = len(rows) > size
        events = list(reversed(rows[:size]))
        return EventPage(
            events=events,
            newer_cursor=events[0].sequence if events and has_more_newer else None,
            older_cursor=events[-1].sequence if events else None,
        )
    if before is not None:
        queryset = queryset.filter(sequence__lt=before)
    rows = list(queryset[: size + 1])
    events = rows[:size]
    return EventPage(
        events=events,
        newer_cursor=events[0].sequence if events and before is not None else None,
        older_cursor=events[-1].sequence if len(rows) > size else None,
    )


def audit_event_get(*, user: User, sequence: int) -> AuditEvent | None:
    if not _can_read(user):
        return None
    return AuditEvent.objects.filter(sequence=sequence).first()


def audit_event_neighbours(*, user: User, event: AuditEvent) -> tuple[int | None, int | None]:
    """The numbers of the events just before and just after ``event`` (None at either end).
    Event numbers are unique and increasing but not gap-free (a rolled-back action leaves a
    hole), so the neighbours are looked up, never computed as number ± 1."""
    if not _can_read(user):
        return None, None
    events = AuditEvent.objects.values_list("sequence", flat=True)
    previous = events.filter(sequence__lt=event.sequence).order_by("-sequence").first()
    following = events.filter(sequence__gt=event.sequence).order_by("sequence").first()
    return previous, following


@dataclass(frozen=True)
class ChainStatus:
    head_sequence: int  # the last event of the version 1 chain
    head_hash: str
    last_checkpoint: AuditCheckpoint | None
    last_verification: AuditEvent | None
    # The key auditors may pin: only ever one that passed the trust anchor outside the
    # database (audit_trusted_keys); None when the database's keys do not.
    signing_key: AuditSigningKey | None
    # Why the database's audit keys are not trusted ("" when they are).
    trust_problem: str
    tree_head: AuditTreeHead | None
    # Why the newest head does not verify with a trusted key ("" when it does, or no head).
    tree_head_problem: str
    tree_head_json: str
    pending: int


def audit_chain_status(*, user: User) -> ChainStatus | None:
    """The chain panel: latest signed tree head, pending events, last verification, and the
    signing key, shown as the one to pin only when it passes the trust anchor."""
    if not _can_read(user):
        return None
    from .models import AuditAction
    from .sequencer import latest_head, tree_head_json
    from .services import AuditTrustError, audit_trusted_keys

    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(sequence=0)
    tree_head = latest_head()
    try:
        trusted = audit_trusted_keys()
        trust_problem = ""
    except AuditTrustError as exc:
        trusted, trust_problem = {}, exc.message
    signing_key = tree_head.signing_key if tree_head else AuditSigningKey.objects.first()
    tree_head_problem = ""
    if tree_head is not None:
        tree_head_problem = trust_problem or tree_head_json(tree_head).verify(trusted) or ""
    return ChainStatus(
        head_sequence=head.sequence,
        head_hash=head.hash,
        last_checkpoint=AuditCheckpoint.objects.order_by("-sequence").first(),
        last_verification=AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED)
        .order_by("-sequence")
        .first(),
        # audit_trusted_keys checks every row, so with no problem the row is trusted.
        signing_key=None if trust_problem else signing_key,
        trust_problem=trust_problem,
        tree_head=tree_head,
        tree_head_problem=tree_head_problem,
        tree_head_json=(
            json.dumps(tree_head_json(tree_head).as_json(), indent=2, sort_keys=True)
            if tree_head is not None and not tree_head_problem
            else ""
        ),
        pending=AuditEvent.objects.filter(leaf__isnull=True).count(),
    )


def audit_tree_head_latest(*, user: User) -> TreeHead | None:
    """The newest signed tree head, as the signed object (None: none yet, or no access)."""
    if not _can_read(user):
        return None
    from .sequencer import latest_head, tree_head_json

    head = latest_head()
    return tree_head_json(head) if head else None


def audit_tree_head_trusted(*, user: User) -> TreeHead | None:
    """The newest signed tree head, only if its signature verifies with a trusted audit key
    (None: none yet, or no access). Raises AuditHeadUntrustedError otherwise: a head signed
    by a key the trust anchor does not know must never be handed out as one to keep."""
    head = audit_tree_head_latest(user=user)
    if head is None:
        return None
    from .services import AuditHeadUntrustedError, AuditTrustError, audit_trusted_keys

    try:
        problem = head.verify(audit_trusted_keys())
    except AuditTrustError as exc:
        problem = exc.message
    if problem:
        raise AuditHeadUntrustedError(
            f"The newest signed tree head is not trusted: {problem}. Do not keep it; run "
            "manage.py verify_audit and compare with the audit public key you pinned."
        )
    return head


@dataclass(frozen=True)
class Inclusion:
    """An event's place in the tree, checked on the server against the newest head."""

    leaf_index: int | None
    tree_size: int | None
    proof: list[str]
    verified: bool
    problem: str


def audit_event_inclusion(*, user: User, event: AuditEvent) -> Inclusion | None:
    """The inclusion proof of `event` against the newest signed head, verified here: the leaf
    hash recomputed from the event's content, the audit path from stored nodes, the root and
    the head's signature checked with the trusted audit keys."""
    if not _can_read(user):
        return None
    from kmsportal.crypto.audit_log import event_entry
    from kmsportal.crypto.merkle import leaf_hash, verify_inclusion

    from .models import AuditLeaf
    from .sequencer import AuditTreeError, latest_head, proof_inclusion, tree_head_json
    from .services import AuditTrustError, audit_trusted_keys

    leaf = AuditLeaf.objects.filter(event_id=event.sequence).first()
    head = latest_head()
    if leaf is None or head is None or leaf.leaf_index >= head.tree_size:
        return Inclusion(
            leaf.leaf_index if leaf else None,
            head.tree_size if head else None,
            [],
            False,
            "not yet integrated into a signed tree head (the sequencer runs every few seconds)",
        )
    try:
        proof = proof_inclusion(leaf.leaf_index, head.tree_size)
        problem = tree_head_json(head).verify(audit_trusted_keys()) or ""
    except (AuditTreeError, AuditTrustError) as exc:
        return Inclusion(leaf.leaf_index, head.tree_size, [], False, str(exc))
    digest = leaf_hash(event_entry(event.chain_fields()))
    if not problem and not verify_inclusion(
        leaf.leaf_index, head.tree_size, digest, proof, bytes.fromhex(head.root_hash)
    ):
        problem = "the proof does not verify: the event or the stored tree was altered"
    return Inclusion(
        leaf.leaf_index, head.tree_size, [p.hex() for p in proof], not problem, problem
    )
