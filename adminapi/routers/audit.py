"""Audit endpoints: search, read, export and verify the audit log, under
``/api/v1/admin/audit/``.

The same selectors and services as the auditor's pages, behind the same permissions
(declared in :data:`RULES`): ``audit.view_auditevent`` to read, ``audit.export_auditevent``
to export (the export is recorded before its first byte, as on the page), and
``audit.verify_auditevent`` to verify (the full check `manage.py verify_audit` runs, recorded
with its result). The export is a GET, as on the page, so read-only tokens may export;
verifying is a POST, as on the page, so it needs a token with the ``roles`` scope.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from ninja import Query, Router

from audit import checking, exports, selectors, services
from audit.models import AuditEvent
from audit.selectors import EventFilters
from kmsportal.errors import KMSError
from kmsportal.labels import target_type_from_text

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import PathId
from ..schemas_audit import (
    ChainStatusOut,
    EventDetailOut,
    EventFilterIn,
    EventPageIn,
    EventPageOut,
    ExportIn,
    TreeHeadOut,
    VerificationOut,
)

router = Router(tags=["Audit"])

VIEW = "audit.view_auditevent"
EXPORT = "audit.export_auditevent"
VERIFY = "audit.verify_auditevent"

#: One rule per operation (adminapi.permissions); the portal page each mirrors is named beside it.
RULES: dict[str, Rule] = {
    "audit_event_list": Rule((VIEW,), write=False),  # /audit/
    "audit_event_get": Rule((VIEW,), write=False),  # /audit/events/<sequence>/
    "audit_chain_status": Rule((VIEW,), write=False),  # /audit/chain/
    "audit_tree_head": Rule((VIEW,), write=False),  # /audit/chain/head.json
    # /audit/export.<fmt>: records audit.exported first; a read (GET) like the page.
    "audit_export": Rule((EXPORT,), write=False, note="records audit.exported"),
    # /audit/chain/verify/: records audit.verified with its result (a POST, as on the page).
    "audit_verify": Rule((VERIFY,), write=True, note="records audit.verified"),
}

EXPORT_TYPES = {
    "jsonl": ("application/x-ndjson; charset=utf-8", exports.export_jsonl),
    "csv": ("text/csv; charset=utf-8", exports.export_csv),
}


def _allowed(request: ApiRequest, operation: str) -> Any:
    """The token's user, once its scope and roles allow ``operation`` (its rule in RULES)."""
    rule = RULES[operation]
    return require(request, *rule.permissions, write=rule.write)


def _filters(given: EventFilterIn) -> EventFilters:
    """The auditor's filters, read as the event list's form reads them."""
    if given.since and given.until and given.since > given.until:
        raise KMSError(
            "until is before since: nothing can match. Swap them",
            code="validation_failed",
            status=422,
        )
    return EventFilters(
        since=given.since,
        until=given.until,
        actor=given.actor.strip(),
        action=given.action.strip(),
        target_type=target_type_from_text(given.target_type)[:64],
        target_id=given.target_id.strip(),
        outcome=given.outcome,
        text=given.text.strip(),
    )


def _event_out(event: AuditEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "time": event.time,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "action_label": event.action_label,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_label": event.target_label,
        "outcome": event.outcome,
        "source_ip": event.source_ip,
        "request_id": event.request_id,
        "details": event.details,
        "hash": event.hash,
    }


@router.get(
    "/events",
    response=EventPageOut,
    summary="Search audit events (newest first)",
)
def audit_event_list(request: ApiRequest, query: Query[EventPageIn]) -> dict[str, Any]:
    """The event list's filters. Keyset-paginated on the sequence number: ``older_cursor``
    as ``before`` gives the next page, ``newer_cursor`` as ``after`` the previous one."""
    user = _allowed(request, "audit_event_list")
    page = selectors.audit_event_page(
        user=user,
        filters=_filters(query),
        before=query.before,
        after=query.after,
        size=query.limit,
    )
    return {
        "items": [_event_out(event) for event in page.events],
        "newer_cursor": page.newer_cursor,
        "older_cursor": page.older_cursor,
    }


@router.get(
    "/events/{int:sequence}",
    response=EventDetailOut,
    summary="One audit event, with its inclusion proof checked against the newest head",
)
def audit_event_get(request: ApiRequest, sequence: PathId) -> dict[str, Any]:
    user = _allowed(request, "audit_event_get")
    event = selectors.audit_event_get(user=user, sequence=sequence)
    if event is None:
        raise KMSError("No such audit event.", code="not_found", status=404)
    previous, following = selectors.audit_event_neighbours(user=user, event=event)
    inclusion = selectors.audit_event_inclusion(user=user, event=event)
    assert inclusion is not None  # the user may read events
    return {
        **_event_out(event),
        "previous_sequence": previous,
        "next_sequence": following,
        "inclusion": {
            "leaf_index": inclusion.leaf_index,
            "tree_size": inclusion.tree_size,
            "proof": inclusion.proof,
            "verified": inclusion.verified,
            "problem": inclusion.problem,
        },
    }


@router.get(
    "/chain",
    response=ChainStatusOut,
    summary="The log's status: newest signed tree head, pending events, last verification",
)
def audit_chain_status(request: ApiRequest) -> dict[str, Any]:
    user = _allowed(request, "audit_chain_status")
    status = selectors.audit_chain_status(user=user)
    assert status is not None  # the user may read events
    head = selectors.audit_tree_head_latest(user=user)
    last = status.last_verification
    return {
        # Only a head that verifies with a trusted key, and only a key that passed the trust
        # anchor (status.signing_key is None otherwise): /chain/head says why with a 409.
        "tree_head": head.as_json() if head is not None and not status.tree_head_problem else None,
        "pending": status.pending,
        "signing_public_key_pem": (
            status.signing_key.public_key_pem if status.signing_key is not None else None
        ),
        "version1_head_sequence": status.head_sequence,
        "version1_last_checkpoint": (
            status.last_checkpoint.sequence if status.last_checkpoint is not None else None
        ),
        "last_verification": (
            {
                "sequence": last.sequence,
                "time": last.time,
                "actor_name": last.actor_name,
                "ok": bool(last.details.get("ok")),
                "events_verified": last.details.get("events_verified"),
                "problem": last.details.get("problem"),
            }
            if last is not None
            else None
        ),
    }


@router.get(
    "/chain/head",
    response=TreeHeadOut,
    summary="The newest signed tree head (keep it outside this system)",
)
def audit_tree_head(request: ApiRequest) -> dict[str, Any]:
    """``kmsclient audit-verify --trusted-head head.json`` later proves the log was not
    rewritten before it. 404 (``no_tree_head``) until the sequencer signed the first one;
    409 (``audit_head_untrusted``) when it does not verify with a trusted audit key."""
    user = _allowed(request, "audit_tree_head")
    head = selectors.audit_tree_head_trusted(user=user)
    if head is None:
        raise KMSError(
            "No signed tree head yet: the sequencer signs one within seconds of the first "
            "events (manage.py audit_head does it now).",
            code="no_tree_head",
            status=404,
        )
    return head.as_json()


@router.get(
    "/export",
    summary="Export events (JSON Lines or CSV), ending with a signed tree head",
    response={200: None},
    openapi_extra={
        "responses": {
            200: {  # the same key as response= (an int): one "200" in the document
                "description": "The export, streamed; the same file as the portal's export",
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        }
    },
)
def audit_export(request: ApiRequest, query: Query[ExportIn]) -> StreamingHttpResponse:
    """JSON Lines (format version 2, verifiable offline with ``kmsclient audit-verify``) or
    CSV, with the event list's filters; ``trusted_size`` adds a consistency proof from a
    head you saved. The export is audited (``audit.exported``) before its first byte."""
    user = _allowed(request, "audit_export")
    filters = _filters(query)
    services.audit_export_start(actor=user, fmt=query.format, filters=filters.as_dict())
    content_type, produce = EXPORT_TYPES[query.format]
    response = StreamingHttpResponse(
        produce(user=user, filters=filters, trusted_size=query.trusted_size),
        content_type=content_type,
    )
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{query.format}"'
    response["Cache-Control"] = "no-store"
    return response


@router.post(
    "/verify",
    response=VerificationOut,
    summary="Verify the whole log now (as manage.py verify_audit)",
)
def audit_verify(request: ApiRequest) -> dict[str, Any]:
    """Trust anchor, version 1 chain, every leaf of the tree, every signed head and the MAC
    of every pending event. A broken log is an answer (``ok`` false, where and why), not an
    error. Recorded as ``audit.verified`` with the result."""
    user = _allowed(request, "audit_verify")
    report = checking.audit_chain_verify(actor=user)
    return {
        **report.as_details(),
        "latest_head_size": report.latest_head_size,
        "method": report.method,
    }
