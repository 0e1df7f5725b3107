"""Response headers the portal adds to every answer (OWASP ASVS V14.4).

Content-Security-Policy: the pages need nothing but their own stylesheet and forms, so
everything else is refused: no inline script or style, no plugins, no framing, forms post
only to this origin. Permissions-Policy switches off browser features nothing here uses.
Django's SecurityMiddleware already sets HSTS (over HTTPS), nosniff, Referrer-Policy and
Cross-Origin-Opener-Policy; XFrameOptionsMiddleware sets X-Frame-Options: DENY.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=(), interest-cohort=()"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
