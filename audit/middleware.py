"""Request id and source address for audit events, and an audit event for every 403.

`AuditRequestMiddleware` sits before CSRF and authentication, so a refused CSRF check and a
`PermissionDenied` raised by any view (today's and later ones) both end up as an
`access.denied` event, without each view having to remember it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from .context import RequestMeta, request_meta_reset, request_meta_set
from .sequencer import sequencer_thread_start


def audit_denied_reason_set(request: HttpRequest, reason: str) -> None:
    """Say why ``request`` is refused: the ``access.denied`` event recorded for its 403 (by
    the middleware below) carries the reason."""
    request.audit_denied_reason = reason  # type: ignore[attr-defined]  # read back with getattr


class AuditRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The audit sequencer thread of this process, started on its first request (not in
        # __init__: gunicorn loads the app in the master, and threads do not survive fork).
        sequencer_thread_start()
        # Our own id, never one taken from the client: the audit must not be steerable.
        request_id = uuid.uuid4().hex
        request.audit_request_id = request_id  # type: ignore[attr-defined]  # read back with getattr
        token = request_meta_set(
            RequestMeta(request_id=request_id, source_ip=request.META.get("REMOTE_ADDR", ""))
        )
        try:
            response = self.get_response(request)
            if response.status_code == 403 and not getattr(request, "audit_recorded", False):
                self._record_denied(request)
        finally:
            request_meta_reset(token)
        response["X-Request-ID"] = request_id
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if isinstance(exception, PermissionDenied):
            audit_denied_reason_set(request, str(exception) or "permission denied")

    @staticmethod
    def _record_denied(request: HttpRequest) -> None:
        from .models import AuditAction, Outcome
        from .services import audit_event_record

        user = getattr(request, "user", None)
        match = getattr(request, "resolver_match", None)
        reason = getattr(request, "audit_denied_reason", None)
        if reason is None:
            reason = "CSRF check failed" if getattr(request, "csrf_failed", False) else "forbidden"
        audit_event_record(
            action=AuditAction.ACCESS_DENIED,
            outcome=Outcome.DENIED,
            actor=user if user is not None and user.is_authenticated else None,
            anonymous=user is None or not user.is_authenticated,
            target_type="url",
            target_id=(match.view_name if match else "")[:64],
            target_label=request.path[:255],
            details={"method": request.method, "path": request.path[:255], "reason": reason[:200]},
        )
