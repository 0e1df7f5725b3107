"""A key backend that stops working mid-flight (the token was unplugged, the HSM is down)
answers 503 with a page that says so, never a traceback.

Start-up refuses a missing token (`kmsportal.checks`); this covers one that goes away while
the portal runs. The response names no token object and no PIN; the log names the problem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from kmsportal.crypto.pkcs11_token import TokenError

from .backends import KeyBackendError

logger = logging.getLogger("kmsportal.keyring")

TITLE = "Key store unavailable"
DETAIL = (
    "The key store (the PKCS#11 token that holds the keys) cannot be used right now. "
    "Nothing was changed. An administrator must check the token; try again later."
)


class KeyBackendUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, TokenError | KeyBackendError):
            return None
        logger.error("key backend failure on %s: %s", request.path, exception)
        if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
            return JsonResponse(
                {"type": "about:blank", "title": TITLE, "status": 503, "detail": DETAIL},
                status=503,
                content_type="application/problem+json",
            )
        html = render_to_string(
            "keyring/unavailable.html", {"title": TITLE, "detail": DETAIL}, request=request
        )
        return HttpResponse(html, status=503)
