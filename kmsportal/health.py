"""`/healthz`: the liveness answer for process supervisors; `/readyz`: readiness for load
balancers (database and cache reachable).

`/healthz` proves that a worker takes requests and runs Django, nothing more: no database query, no
session, no template, no sign-in, so that a slow database does not get healthy workers taken
out of rotation, and probing it costs next to nothing.
"""

from __future__ import annotations

import logging
import secrets

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """200 "ok" as text/plain, for GET and HEAD."""
    return HttpResponse(b"ok\n", content_type="text/plain; charset=utf-8")


@login_not_required
@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness for a load balancer: 200 "ready" when this node reaches its database and its
    cache (Redis when several nodes run), 503 naming the one it cannot reach otherwise.

    A node whose Redis is down answers sign-ins and key fetches with 500 while `/healthz`
    stays 200; routing on this answer takes such a node out of rotation instead. The reason
    names the dependency only, never an address or a driver's message.
    """
    probe = secrets.token_hex(8)
    checks = (("database", _database_answers), ("cache", lambda: _cache_answers(probe)))
    for name, check in checks:
        try:
            ok = check()
        except Exception:  # any failure of a dependency means "not ready"
            logger.warning("readiness: the %s does not answer", name, exc_info=True)
            ok = False
        if not ok:
            return HttpResponse(
                f"not ready: the {name} does not answer\n".encode(),
                status=503,
                content_type="text/plain; charset=utf-8",
            )
    return HttpResponse(b"ready\n", content_type="text/plain; charset=utf-8")


def _database_answers() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return bool(cursor.fetchone() == (1,))


def _cache_answers(probe: str) -> bool:
    key = f"kmsportal:readyz:{probe}"
    cache.set(key, probe, timeout=10)
    answered = cache.get(key) == probe
    cache.delete(key)
    return bool(answered)
