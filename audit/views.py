"""The auditor's workspace: event list, detail, chain status, verify now, exports."""

from __future__ import annotations

from django.contrib import messages
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.csrf import csrf_failure as django_csrf_failure

from kmsportal.errors import problem_for
from kmsportal.list_pages import filtered_list_page
from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin

from . import checking, exports, selectors, services
from .forms import EventFilterForm
from .middleware import audit_denied_reason_set


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals are access-denied events too; the middleware records them."""
    audit_denied_reason_set(request, f"CSRF check failed: {reason}"[:200])
    return django_csrf_failure(request, reason=reason, template_name="403_csrf.html")


class EventListView(PortalPermissionMixin, View):
    permission_required = "audit.view_auditevent"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = EventFilterForm(request.GET)
        return filtered_list_page(
            request,
            "audit/event_list.html",
            form,
            lambda data: selectors.audit_event_page(
                user=request.user,
                filters=form.filters(),
                before=data.get("before"),
                after=data.get("after"),
            ),
            cursors=("before", "after"),
        )


class EventDetailView(PortalPermissionMixin, View):
    permission_required = "audit.view_auditevent"

    def get(self, request: AuthenticatedRequest, sequence: int) -> HttpResponse:
        event = selectors.audit_event_get(user=request.user, sequence=sequence)
        if event is None:
            raise Http404("No such audit event.")
        previous, following = selectors.audit_event_neighbours(user=request.user, event=event)
        return render(
            request,
            "audit/event_detail.html",
            {
                "event": event,
                "previous_sequence": previous,
                "next_sequence": following,
                "details_json": services.details_json(event.details),
                "inclusion": selectors.audit_event_inclusion(user=request.user, event=event),
            },
        )


class ChainStatusView(PortalPermissionMixin, View):
    permission_required = "audit.view_auditevent"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(
            request, "audit/chain.html", {"status": selectors.audit_chain_status(user=request.user)}
        )


class TreeHeadDownloadView(PortalPermissionMixin, View):
    """The newest signed tree head as JSON, for auditors to keep outside the system.

    Refused (409, a problem document) when the head does not verify with a trusted audit
    key: a head re-signed with a swapped key must never reach an auditor as one to keep."""

    permission_required = "audit.view_auditevent"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        try:
            head = selectors.audit_tree_head_trusted(user=request.user)
        except services.AuditHeadUntrustedError as exc:
            response = problem_for(exc)
            response["Cache-Control"] = "no-store"
            return response
        if head is None:
            raise Http404("No signed tree head yet.")
        response = JsonResponse(head.as_json())
        response["Content-Disposition"] = f'attachment; filename="audit-head-{head.tree_size}.json"'
        response["Cache-Control"] = "no-store"
        return response


class ChainVerifyView(PortalPermissionMixin, View):
    permission_required = "audit.verify_auditevent"
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        report = checking.audit_chain_verify(actor=request.user)
        if report.ok:
            messages.success(
                request,
                f"Log intact: {report.events_verified} events, tree of {report.tree_size} "
                f"leaves, {report.heads_verified} signed tree heads verified "
                f"({report.pending} events waiting for the sequencer, their MACs verified).",
            )
        else:
            where = f" at event {report.broken_at}" if report.broken_at is not None else ""
            messages.error(request, f"Log verification FAILED{where}: {report.problem}")
        return HttpResponseRedirect(reverse("audit:chain"))


class ExportView(PortalPermissionMixin, View):
    """Stream a filtered range; the export itself is an audited event."""

    permission_required = "audit.export_auditevent"
    formats = {
        "jsonl": ("application/x-ndjson; charset=utf-8", exports.export_jsonl),
        "csv": ("text/csv; charset=utf-8", exports.export_csv),
    }

    def get(self, request: AuthenticatedRequest, fmt: str) -> HttpResponseBase:
        if fmt not in self.formats:
            raise Http404("Unknown export format.")
        form = EventFilterForm(request.GET)
        if not form.is_valid():
            return render(
                request, "audit/event_list.html", {"form": form, "page": None}, status=400
            )
        filters = form.filters()
        trusted_size = form.cleaned_data.get("trusted_size")
        services.audit_export_start(actor=request.user, fmt=fmt, filters=filters.as_dict())
        content_type, produce = self.formats[fmt]
        response = StreamingHttpResponse(
            produce(user=request.user, filters=filters, trusted_size=trusted_size),
            content_type=content_type,
        )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
        response["Cache-Control"] = "no-store"
        return response
