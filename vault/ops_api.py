"""The operations API endpoints (/api/v1/session, /api/v1/session/ping, /api/v1/keys/<op>).

Parse, call one service, answer. Protected answers are JSON ``{"nonce", "ciphertext"}``
with the inner status as the HTTP status; refusals before a session is established are
RFC 9457 problem documents in clear (they carry no secret). See docs/operations-api.md.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from kmsportal.errors import problem_for

from . import refusals, sessions
from .api import ApiView, _json_body
from .operations import OPERATIONS_API

#: A batch of 1,000 items of 1 KiB is ~1.9 MB once base64 twice; 4 MiB leaves room.
MAX_OPERATION_BODY_BYTES = 4 * 1024 * 1024


class OperationConverter:
    """A URL segment naming an operation of the operations API."""

    regex = "|".join(sorted(OPERATIONS_API, key=len, reverse=True))

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class SessionOpenView(ApiView):
    def post(self, request: HttpRequest) -> JsonResponse:
        body = _json_body(request)
        try:
            answer = sessions.operation_session_open(body=body)
        except refusals.FetchRefused as exc:
            return problem_for(exc)
        return JsonResponse(answer, status=201)


class OperationView(ApiView):
    """One protected request of `operation` (or the trivial `ping`)."""

    operation = ""

    def post(self, request: HttpRequest, operation: str | None = None) -> JsonResponse:
        body = _json_body(request, MAX_OPERATION_BODY_BYTES)
        try:
            status, answer = sessions.operation_request_handle(
                operation=operation or self.operation, body=body
            )
        except sessions.SessionRefused as exc:
            refusals.refusal_tally(code=exc.code)
            return problem_for(exc)
        # The sealed answer is base64 (ASCII): nothing to escape, so the encoder is not asked
        # to look for non-ASCII characters in a batch's two megabytes.
        return JsonResponse(answer, status=status, json_dumps_params={"ensure_ascii": False})
