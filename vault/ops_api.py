"""The operations API endpoints (/api/v1/session, /api/v1/session/ping, /api/v1/keys/<op>).

Parse, call one service, answer. A protected request comes in one of two framings, chosen
by its Content-Type: the JSON envelope (``application/json``, answered with JSON ``{"nonce",
"ciphertext"}``) or the binary frame (``application/vnd.kmsportal.sealed``, answered in
kind; `kmsportal.crypto.batch_frame`). Either way the inner status is the HTTP status;
refusals before a session is established are RFC 9457 problem documents in clear (they
carry no secret). See docs/operations-api.md.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from kmsportal.crypto.batch_frame import MEDIA_TYPE as SEALED_MEDIA_TYPE
from kmsportal.errors import problem_for

from . import refusals, sessions
from .api import ApiView, _json_body, _read_body
from .operations import OPERATIONS_API

#: A batch of 1,000 items of 1 KiB is ~1.9 MB once base64 twice (JSON envelope), ~1.1 MB in
#: the binary frame; 4 MiB leaves room.
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

    def post(self, request: HttpRequest, operation: str | None = None) -> HttpResponse:
        operation = operation or self.operation
        media_type = request.content_type.strip().lower() if request.content_type else ""
        try:
            if media_type == SEALED_MEDIA_TYPE:
                body = _read_body(request, MAX_OPERATION_BODY_BYTES)
                status, sealed = sessions.operation_binary_request_handle(
                    operation=operation, body=body
                )
                return HttpResponse(sealed, status=status, content_type=SEALED_MEDIA_TYPE)
            status, answer = sessions.operation_request_handle(
                operation=operation, body=_json_body(request, MAX_OPERATION_BODY_BYTES)
            )
        except sessions.SessionRefused as exc:
            refusals.refusal_tally(code=exc.code)
            return problem_for(exc)
        # The sealed answer is base64 (ASCII): nothing to escape, so the encoder is not asked
        # to look for non-ASCII characters in a batch's two megabytes.
        return JsonResponse(answer, status=status, json_dumps_params={"ensure_ascii": False})
