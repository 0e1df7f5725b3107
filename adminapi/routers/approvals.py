"""The two-person inbox and decisions, for every kind (kmsportal.two_person), as the portal's
Approvals pages (accounts.approval_views) offer them.

Seeing a kind's requests needs its ``visible`` permission; deciding (approve, reject,
withdraw) needs its ``permission``, as on the confirmation page. The services decide the rest
and refuse with a problem document: the requester never approves their own request
(``two_person_rule``, 409), an approver must be eligible (own password, own second factor,
past the cooling-off: ``approver_not_eligible``, 403), an expired request can only be rejected
or withdrawn. An approval that makes a one-time secret (a client's new enrollment token)
answers it in that response only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from audit.middleware import audit_denied_reason_set
from kmsportal.crypto.errors import KMSError
from kmsportal.two_person import TwoPersonKind, two_person_kind, two_person_kinds

from ..auth import ApiRequest, Forbidden, require
from ..permissions import Rule
from ..schemas import PathId

router = Router(tags=["Approvals"])


def _visible_permissions() -> tuple[str, ...]:
    return tuple(sorted({kind.visible for kind in two_person_kinds()}))


RULES: dict[str, Rule] = {
    "approvals_list": Rule(
        (), write=False, any_of=_visible_permissions(), note="lists the kinds the user may see"
    ),
    "approvals_get": Rule((), write=False, kind="visible"),
    "approvals_approve": Rule((), write=True, kind="permission"),
    "approvals_reject": Rule((), write=True, kind="permission"),
    "approvals_withdraw": Rule((), write=True, kind="permission"),
}


class RequestOut(Schema):
    kind: str
    id: int
    summary: str
    reason: str
    status: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    expired: bool
    decided_by: str
    decided_at: datetime | None


class Fact(Schema):
    label: str
    value: str


class RequestDetailOut(RequestOut):
    title: str
    changes: list[Fact]
    affected: list[Fact]
    warning: str
    may_decide: bool
    approver_refusal: str | None = Field(
        description="why the caller may not approve it (None: they may, or it is their own)"
    )


class InboxFilter(Schema):
    kind: str = Field("", max_length=40)


class CommentIn(Schema):
    comment: str = Field("", max_length=1000)


class DecisionOut(Schema):
    request: RequestOut
    message: str
    secret: dict[str, str] | None = Field(
        default=None,
        description="a one-time secret the approval made (shown in this response only)",
    )


def _row(kind: TwoPersonKind, item: Any) -> RequestOut:
    return RequestOut(
        kind=kind.slug,
        id=item.pk,
        summary=kind.summary(item),
        reason=kind.why(item),
        status=item.status,
        requested_by=item.requested_by_name,
        requested_at=item.requested_at,
        expires_at=item.expires_at,
        expired=item.is_expired,
        decided_by=item.decided_by_name,
        decided_at=item.decided_at,
    )


def _kind(request: ApiRequest, slug: str, need: str) -> TwoPersonKind:
    kind = two_person_kind(slug)
    if kind is None:
        raise KMSError(f"no kind of request named {slug!r}", code="not_found", status=404)
    permission = getattr(kind, need)
    if not request.user.has_perm(permission):
        audit_denied_reason_set(request, f"missing permission {permission}")
        raise Forbidden(f"this needs the {permission} permission")
    return kind


def _item(kind: TwoPersonKind, pk: int) -> Any:
    item = kind.get(pk)
    if item is None:
        raise KMSError("no such request", code="not_found", status=404)
    return item


@router.get("", response=list[RequestOut])
def approvals_list(request: ApiRequest, filters: Query[InboxFilter]) -> list[RequestOut]:
    """Pending requests of every kind the caller may see, oldest first."""
    require(request, write=False, any_of=_visible_permissions())
    rows: list[RequestOut] = []
    for kind in two_person_kinds():
        if not request.user.has_perm(kind.visible) or (filters.kind and kind.slug != filters.kind):
            continue
        rows.extend(_row(kind, item) for item in kind.pending())
    return rows


@router.get("/{kind}/{request_id}", response=RequestDetailOut)
def approvals_get(request: ApiRequest, kind: str, request_id: PathId) -> RequestDetailOut:
    """One request as its confirmation page shows it: exactly what changes, who is affected."""
    require(request, write=False)
    found = _kind(request, kind, "visible")
    item = _item(found, request_id)
    from accounts.approvers import approver_refusal

    user = request.user
    confirmation = found.confirmation(item)
    may_decide = user.has_perm(found.permission)
    refusal = None
    if item.status == "pending" and may_decide and item.requested_by_id != user.pk:
        refusal = approver_refusal(user=user, permission=found.permission)
    return RequestDetailOut(
        **_row(found, item).dict(),
        title=confirmation.title,
        changes=[Fact(label=a, value=b) for a, b in confirmation.changes],
        affected=[Fact(label=a, value=b) for a, b in confirmation.affected],
        warning=confirmation.warning,
        may_decide=may_decide,
        approver_refusal=refusal,
    )


def _fresh(kind: TwoPersonKind, item: Any) -> RequestOut:
    return _row(kind, _item(kind, item.pk))


@router.post("/{kind}/{request_id}/approve", response=DecisionOut)
def approvals_approve(
    request: ApiRequest,
    response: HttpResponse,
    kind: str,
    request_id: PathId,
) -> DecisionOut:
    """Approve: by a different, eligible person, before the request expires."""
    user = require(request, write=True)
    found = _kind(request, kind, "permission")
    item = _item(found, request_id)
    decision = found.approve(actor=user, request=item)
    if decision.once:
        response["Cache-Control"] = "no-store"
    return DecisionOut(request=_fresh(found, item), message=decision.message, secret=decision.once)


@router.post("/{kind}/{request_id}/reject", response=DecisionOut)
def approvals_reject(
    request: ApiRequest, kind: str, body: CommentIn, request_id: PathId
) -> DecisionOut:
    """Turn the request down (someone other than the requester; also once expired)."""
    user = require(request, write=True)
    found = _kind(request, kind, "permission")
    item = _item(found, request_id)
    found.reject(actor=user, request=item, comment=body.comment.strip())
    return DecisionOut(request=_fresh(found, item), message=f"{found.label} request rejected.")


@router.post("/{kind}/{request_id}/withdraw", response=DecisionOut)
def approvals_withdraw(request: ApiRequest, kind: str, request_id: PathId) -> DecisionOut:
    """The requester takes their request back."""
    user = require(request, write=True)
    found = _kind(request, kind, "permission")
    item = _item(found, request_id)
    found.withdraw(actor=user, request=item)
    return DecisionOut(request=_fresh(found, item), message=f"{found.label} request withdrawn.")
