"""The second factor as a gate in front of every page.

`MfaRequiredMiddleware` sits right after AuthenticationMiddleware. A signed-in session that
has passed the password but not the second factor, while the user needs one
(accounts.mfa.mfa_required_for), reaches only the MFA verify page, the enrollment page (while
the user has no confirmed authenticator), sign-out, static files and the public endpoints.
Any other GET or HEAD is sent to the MFA page with `?next=`; any other method gets 403
(recorded as `access.denied` by audit.middleware). A session whose verified device was reset
is signed out here, and the request goes on as anonymous.

A session that never went through the sign-in form (`Client.force_login`, or a session made
before MFA existed) carries no verified flag and counts as not verified.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import logout as auth_logout
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from audit.middleware import audit_denied_reason_set

from .mfa import MfaSessionState, mfa_session_state

# Anonymous-public anyway (relying parties, client services, load balancers): never gated,
# and never charged the database queries the gate costs.
PUBLIC_PREFIXES = ("/pki/crl/", "/pki/ca/", "/pki/ocsp/", "/api/v1/", "/healthz", "/readyz")


@cache
def _open_prefixes() -> tuple[str, ...]:
    static = settings.STATIC_URL or "/static/"
    if "://" not in static:
        static = "/" + static.lstrip("/")
        return (*PUBLIC_PREFIXES, static)
    return PUBLIC_PREFIXES


@cache
def _paths() -> dict[str, str]:
    return {
        "verify": reverse("accounts:mfa_verify"),
        "enroll": reverse("accounts:mfa_enroll"),
        "logout": reverse("accounts:logout"),
    }


class MfaRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith(_open_prefixes()):
            return self.get_response(request)
        if not request.user.is_authenticated:
            return self.get_response(request)
        state = mfa_session_state(request)
        request.mfa_state = state  # type: ignore[attr-defined]  # read back with getattr
        if state is MfaSessionState.SATISFIED:
            return self.get_response(request)
        if state is MfaSessionState.ENDED:
            # The authenticator this session was verified with was reset: sign it out and
            # let the request go on as anonymous (sign-in page or public answer).
            auth_logout(request)
            return self.get_response(request)
        paths = _paths()
        allowed = {paths["verify"], paths["logout"]}
        if state is MfaSessionState.PENDING_ENROLL:
            allowed.add(paths["enroll"])
        if path in allowed:
            return self.get_response(request)
        if request.method in ("GET", "HEAD"):
            target = paths["enroll"] if state is MfaSessionState.PENDING_ENROLL else paths["verify"]
            return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
        audit_denied_reason_set(request, "multi-factor verification required")
        raise PermissionDenied("Finish signing in with your authenticator app first.")
