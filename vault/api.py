"""The client API (/api/v1/): JSON in, JSON out, authenticated by signatures, not cookies.

Every answer that is not a success is an RFC 9457 problem document ({"type", "title",
"status", "detail", "code"}, ``application/problem+json``) with a stable machine-readable
``code`` that kmsclient turns into a one-line message; never an HTML page:

    413 request_too_large       body over 64 KiB (not read)
    415 unsupported_media_type  Content-Type is not application/json
    400 malformed_request       not JSON, or not a request of the protocol
    404 not_found / 405 method_not_allowed
    429 rate_limited            this source address sent too many unattributable requests
    ...                         and every refusal of `vault.exchange` with its own code

Refusals that no verified client can be held to are counted per source address and minute
(`refusals.refusal_tally`), never audited one by one; the others are audited in the
client's name by the distribution services.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from kmsportal.errors import problem_for, problem_response

from . import clients, exchange, refusals

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
JSON_MEDIA_TYPE = "application/json"


class _Refused(Exception):
    def __init__(self, response: JsonResponse) -> None:
        self.response = response


def problem(code: str, detail: str, status: int, *, retry_after: int | None = None) -> JsonResponse:
    return problem_response(code, detail, status, retry_after=retry_after)


def _refuse_unattributed(code: str, detail: str, status: int) -> _Refused:
    refusals.refusal_tally(code=code)
    return _Refused(problem(code, detail, status))


def _read_body(request: HttpRequest, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, at most MAX_BODY_BYTES; read from the stream so that an oversized body is
    never buffered (and never reaches Django's own HTML 400 for DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _refuse_unattributed(
            "malformed_request", "the Content-Length header is not a number", 400
        ) from None
    if declared > limit:
        raise _refuse_unattributed(
            "request_too_large", f"request body larger than {limit // 1024} KiB", 413
        )
    body = request.read(limit + 1)
    if len(body) > limit:
        raise _refuse_unattributed(
            "request_too_large", f"request body larger than {limit // 1024} KiB", 413
        )
    return body


def _json_body(request: HttpRequest, limit: int = MAX_BODY_BYTES) -> Any:
    """Size (413), then media type (415), then JSON (400): each refusal a problem document."""
    body = _read_body(request, limit)
    media_type = request.content_type.strip().lower() if request.content_type else ""
    if media_type != JSON_MEDIA_TYPE:
        raise _refuse_unattributed(
            "unsupported_media_type",
            f"send the request as {JSON_MEDIA_TYPE}, not {media_type or 'no Content-Type'}",
            415,
        )
    charset = (request.content_params or {}).get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise _refuse_unattributed(
            "unsupported_media_type", "the JSON body must be UTF-8 (RFC 8259)", 415
        )
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse_unattributed("malformed_request", "the body is not valid JSON", 400) from None


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class ApiView(View):
    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The API records its own refusals; the portal's 403 middleware must not add one.
        request.audit_recorded = True  # type: ignore[attr-defined]  # read back with getattr
        wait = refusals.address_refusals_exceeded()
        if wait is not None:
            # A source that keeps sending what nobody can be held to: answered unread, and
            # counted too (one counter and one row update, never an audit event), so the
            # minute's `api.requests_refused` event reports the whole flood.
            refusals.refusal_tally(code="rate_limited")
            return problem(
                "rate_limited",
                "too many refused requests from this address; retry later",
                429,
                retry_after=wait,
            )
        try:
            return super().dispatch(request, *args, **kwargs)
        except _Refused as refused:
            return refused.response
        except Exception:
            # A bug or an outage: still a problem document, never Django's HTML page.
            logger.exception("client API request failed")
            return problem("internal_error", "the KMS could not answer this request", 500)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = problem(
            "method_not_allowed", f"{request.method} is not allowed here; use POST", 405
        )
        response["Allow"] = "POST"
        return response


class EnrollView(ApiView):
    def post(self, request: HttpRequest) -> JsonResponse:
        body = _json_body(request)
        try:
            answer = clients.client_enroll_response(body=body)
        except refusals.FetchRefused as exc:
            return problem_for(exc)
        return JsonResponse(answer, status=201)


class KeyFetchView(ApiView):
    def post(self, request: HttpRequest) -> JsonResponse:
        body = _json_body(request)
        try:
            answer = exchange.key_fetch(
                body=body, request_id=getattr(request, "audit_request_id", "")
            )
        except refusals.FetchRefused as exc:
            return problem_for(exc)
        return JsonResponse(answer)


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class NotFoundView(View):
    """Anything else under /api/v1/: a problem document, not the portal's HTML 404."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        request.audit_recorded = True  # type: ignore[attr-defined]  # read back with getattr
        return problem("not_found", "no such client API endpoint", 404)
