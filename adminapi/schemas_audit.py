"""Request and response bodies of the audit endpoints (`adminapi.routers.audit`).

The filters are the auditor's page filters (`audit.forms.EventFilterForm`), with the same
limits; an event is shown as the event page shows it, details included (they never hold
secrets: `audit.services` refuses to record such keys).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema

from .schemas import MAX_ID, Instant


class EventFilterIn(Schema):
    """What to narrow the log to; empty values mean no filter (as on the event list)."""

    since: Instant | None = Field(default=None, description="Events at or after (UTC).")
    until: Instant | None = Field(default=None, description="Events before (UTC).")
    actor: str = Field(default="", max_length=150, description="Exact actor name.")
    action: str = Field(default="", max_length=64, description="An event type, e.g. key.rotated.")
    target_type: str = Field(
        default="", max_length=64, description="A target type label or name, e.g. pki.Certificate."
    )
    target_id: str = Field(default="", max_length=64)
    outcome: Literal["", "success", "denied", "error"] = ""
    text: str = Field(default="", max_length=100, description="Target label contains.")


class EventPageIn(EventFilterIn):
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Cursor: events older than this number."
    )
    after: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="Cursor: events newer than this number."
    )
    limit: int = Field(default=50, ge=1, le=500)


class ExportIn(EventFilterIn):
    format: Literal["jsonl", "csv"] = "jsonl"
    trusted_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="The tree size of a head you saved: the export adds a consistency proof.",
    )


class EventOut(Schema):
    sequence: int
    time: datetime
    actor_type: str
    actor_id: str
    actor_name: str
    action: str
    action_label: str
    target_type: str
    target_id: str
    target_label: str
    outcome: Literal["success", "denied", "error"]
    source_ip: str
    request_id: str
    details: dict[str, Any]
    hash: str


class EventPageOut(Schema):
    items: list[EventOut]
    newer_cursor: int | None = Field(description="Pass as ?after= for newer events.")
    older_cursor: int | None = Field(description="Pass as ?before= for older events.")


class InclusionOut(Schema):
    leaf_index: int | None
    tree_size: int | None
    proof: list[str] = Field(description="RFC 9162 audit path, hex.")
    verified: bool
    problem: str


class EventDetailOut(EventOut):
    previous_sequence: int | None
    next_sequence: int | None
    inclusion: InclusionOut


class TreeHeadOut(Schema):
    """A signed tree head as `kmsclient audit-verify --trusted-head` reads it."""

    type: Literal["tree_head"]
    log: str
    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str


class VerificationOut(Schema):
    ok: bool
    events_verified: int
    checkpoints_verified: int
    head_sequence: int
    broken_at: int | None
    problem: str | None
    tree_size: int
    heads_verified: int
    latest_head_size: int | None
    pending: int = Field(description="Events not yet in the tree (their MACs verified).")
    method: str


class LastVerificationOut(Schema):
    sequence: int
    time: datetime
    actor_name: str
    ok: bool
    events_verified: int | None
    problem: str | None


class ChainStatusOut(Schema):
    tree_head: TreeHeadOut | None
    pending: int
    signing_public_key_pem: str | None
    version1_head_sequence: int
    version1_last_checkpoint: int | None
    last_verification: LastVerificationOut | None
