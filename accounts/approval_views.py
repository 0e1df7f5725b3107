"""The two-person inbox and the confirmation page, one for every kind (kmsportal.two_person).

The inbox lists what waits, per kind the user may see; nothing is approved from it. Each
request opens on its confirmation page, which shows exactly what approving changes and who is
affected, with the requester, the reason and the deadline; only there can it be approved,
rejected (with a comment) or withdrawn (by the requester). The services decide (and refuse,
with a message): who asked, who may approve, expiry, races.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from kmsportal.mixins import AuthenticatedRequest, SignedInMixin
from kmsportal.two_person import TwoPersonKind, two_person_kind, two_person_kinds
from kmsportal.views_errors import KMSError, refusal_flash

from .approvers import approver_refusal

DECISIONS = ("approve", "reject", "withdraw")


def _kind_or_404(user: Any, slug: str) -> TwoPersonKind:
    kind = two_person_kind(slug)
    if kind is None:
        raise Http404("No such kind of request.")
    if not user.has_perm(kind.visible):
        raise PermissionDenied(f"seeing these requests needs {kind.visible}")
    return kind


class ApprovalInboxView(SignedInMixin, View):
    """Every pending two-person request the user may see, grouped by kind."""

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        user = request.user
        only = request.GET.get("kind", "")  # the dashboard links each kind's count here
        sections = []
        for kind in two_person_kinds():
            if not user.has_perm(kind.visible) or (only and kind.slug != only):
                continue
            sections.append(
                {
                    "kind": kind,
                    "rows": [
                        {
                            "request": r,
                            "summary": kind.summary(r),
                            "why": kind.why(r),
                            "own": r.requested_by_id == user.pk,
                        }
                        for r in kind.pending()
                    ],
                }
            )
        if not sections:
            raise PermissionDenied("no two-person requests are visible to you")
        return render(request, "approvals/inbox.html", {"sections": sections})


@method_decorator(never_cache, name="dispatch")
class ApprovalConfirmView(SignedInMixin, View):
    """GET: the confirmation page. POST ``decision`` = approve, reject or withdraw."""

    def _context(self, kind: TwoPersonKind, item: Any) -> dict[str, Any]:
        user = self.request.user
        pending = item.status == "pending"
        may_decide = user.has_perm(kind.permission)
        own = item.requested_by_id == user.pk
        refusal = None
        if pending and may_decide and not own:
            refusal = approver_refusal(user=user, permission=kind.permission)
        return {
            "kind": kind,
            "item": item,
            "confirmation": kind.confirmation(item),
            "why": kind.why(item),
            "pending": pending,
            "own": own,
            "may_decide": may_decide,
            "can_approve": pending and may_decide and not own and not item.is_expired,
            "approver_refusal": refusal,
        }

    def get(self, request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
        kind = _kind_or_404(request.user, slug)
        item = kind.get(pk)
        if item is None:
            raise Http404("No such request.")
        return render(request, "approvals/confirm.html", self._context(kind, item))

    def post(self, request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
        kind = _kind_or_404(request.user, slug)
        if not request.user.has_perm(kind.permission):
            raise PermissionDenied(f"deciding these requests needs {kind.permission}")
        item = kind.get(pk)
        if item is None:
            raise Http404("No such request.")
        decision = request.POST.get("decision", "")
        if decision not in DECISIONS:
            messages.error(request, "Choose approve, reject or withdraw.")
            return HttpResponseRedirect(request.path)
        comment = (request.POST.get("comment") or "").strip()[:1000]
        try:
            if decision == "approve":
                outcome = kind.approve(actor=request.user, request=item)
                if outcome.once:
                    response = render(
                        request,
                        "approvals/once.html",
                        {"kind": kind, "item": item, "outcome": outcome},
                    )
                    response["Cache-Control"] = "no-store"
                    return response
                messages.success(request, outcome.message)
            elif decision == "reject":
                kind.reject(actor=request.user, request=item, comment=comment)
                messages.success(request, f"{kind.label} request rejected; nothing changed.")
            else:
                kind.withdraw(actor=request.user, request=item)
                messages.success(request, f"{kind.label} request withdrawn; nothing changed.")
        except KMSError as exc:
            refusal_flash(request, exc)
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(reverse("approvals:inbox"))
