"""The client API (/api/v1/): JSON in, JSON out, authenticated by signatures, not cookies.

Errors are RFC 9457 problem documents: {"type", "title", "status", "detail", "code"}, with a
stable machine-readable `code` that kmsclient turns into a one-line message.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from . import distribution

MAX_BODY_BYTES = 64 * 1024
PROBLEM_BASE = "https://kmsportal.invalid/problems/"


def problem(code: str, detail: str, status: int, *, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse(
        {
            "type": PROBLEM_BASE + code,
            "title": code.replace("_", " "),
            "status": status,
            "detail": detail,
            "code": code,
        },
        status=status,
        content_type="application/problem+json",
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _json_body(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    if len(request.body) > MAX_BODY_BYTES:
        return None, problem("malformed_request", "request body larger than 64 KiB", 413)
    try:
        return json.loads(request.body), None
    except (ValueError, UnicodeDecodeError):
        return None, problem("malformed_request", "the body is not valid JSON", 400)


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class ApiView(View):
    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        # The API records its own refusals; the portal's 403 middleware must not add one.
        request.audit_recorded = True
        return super().dispatch(request, *args, **kwargs)


class EnrollView(ApiView):
    def post(self, request: HttpRequest) -> JsonResponse:
        body, error = _json_body(request)
        if error:
            return error
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("token"), str)
            or not isinstance(body.get("csr"), str)
        ):
            return problem("malformed_request", 'expected {"token": "...", "csr": "<PEM>"}', 400)
        try:
            answer = distribution.client_enroll_response(token=body["token"], csr_pem=body["csr"])
        except distribution.FetchRefused as exc:
            return problem(exc.code, exc.message, exc.status)
        return JsonResponse(answer, status=201)


class KeyFetchView(ApiView):
    def post(self, request: HttpRequest) -> JsonResponse:
        body, error = _json_body(request)
        if error:
            return error
        try:
            answer = distribution.key_fetch(
                body=body, request_id=getattr(request, "audit_request_id", "")
            )
        except distribution.FetchRefused as exc:
            return problem(exc.code, exc.message, exc.status, retry_after=exc.retry_after)
        return JsonResponse(answer)
