"""The benchmark server's URLconf: the whole portal, plus two baselines for CRL downloads.

* ``/bench/trivial``: the issue's "trivial Django view": a few bytes, no database, no
  session, no template. The cost of Django and gunicorn answering at all.
* ``/bench/same-size``: a module-level constant of exactly as many bytes as the CRL the
  benchmark downloads (``BENCH_SAME_SIZE_BYTES``, set by the benchmark before it starts
  gunicorn), still without any database. Against it, the CRL download row shows our own
  overhead (the validator and byte queries, conditional-request headers), not the cost of
  moving the bytes.

Both are public and read-only, and exist only under `bench.settings`.
"""

from __future__ import annotations

import os

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_safe

# Random bytes, so that nothing on the way (now or later) could compress them away.
SAME_SIZE_BODY = os.urandom(int(os.environ.get("BENCH_SAME_SIZE_BYTES", "0") or 0))


@login_not_required
@require_safe
def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok\n", content_type="text/plain; charset=utf-8")


@login_not_required
@require_safe
def same_size(request: HttpRequest) -> HttpResponse:
    return HttpResponse(SAME_SIZE_BODY, content_type="application/pkix-crl")


urlpatterns = [
    path("bench/trivial", trivial, name="bench_trivial"),
    path("bench/same-size", same_size, name="bench_same_size"),
    path("", include("kmsportal.urls")),
]
