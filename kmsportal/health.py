"""`/healthz`: the liveness answer for load balancers and process supervisors.

It proves that a worker takes requests and runs Django, nothing more: no database query, no
session, no template, no sign-in, so that a slow database does not get healthy workers taken
out of rotation, and probing it costs next to nothing.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """200 "ok" as text/plain, for GET and HEAD."""
    return HttpResponse(b"ok\n", content_type="text/plain; charset=utf-8")
