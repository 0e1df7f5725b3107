"""What relying parties fetch without signing in: CA certificates (AIA caIssuers), CRLs (the
distribution points) and OCSP; stored bytes with ETag, Last-Modified, Expires and
Cache-Control, conditional GET and HEAD answered 304 without a body."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from datetime import datetime

from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.utils.decorators import method_decorator
from django.utils.http import http_date
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import crl, ocsp, selectors
from .common import (
    CA_CERTIFICATE_HTTP_MAX_AGE,
    CRL_HTTP_MAX_AGE,
    DER_CERTIFICATE_TYPE,
    DER_CRL_TYPE,
    OCSP_HTTP_MAX_AGE,
    OCSP_RESPONSE_TYPE,
    PEM_TYPE,
)


def _public_bytes(
    request: HttpRequest,
    load: Callable[[], bytes | None],
    *,
    content_type: str,
    etag: str,
    last_modified: datetime,
    fresh_until: datetime,
    max_age_cap: int,
) -> HttpResponse | None:
    """Serve the bytes ``load`` returns, with validators and a freshness bounded by
    ``fresh_until``. A conditional GET or HEAD whose validators match is answered 304
    without calling ``load``. None if ``load`` returns None (the content was replaced
    meanwhile: the caller looks again)."""
    now = timezone.now()
    max_age = max(0, min(max_age_cap, int((fresh_until - now).total_seconds())))
    response = HttpResponse(content_type=content_type)
    response["ETag"] = f'"{etag}"'
    response["Last-Modified"] = http_date(int(last_modified.timestamp()))
    response["Expires"] = http_date(int(now.timestamp()) + max_age)
    response["Cache-Control"] = f"public, max-age={max_age}" if max_age else "no-cache"
    answer = get_conditional_response(
        request,
        etag=response["ETag"],
        last_modified=int(last_modified.timestamp()),
        response=response,
    )
    if answer is not response:
        return answer  # 304 Not Modified or 412 Precondition Failed, no body
    content = load()
    if content is None:
        return None
    response.content = content
    return response


@method_decorator(login_not_required, name="dispatch")
class CACertificateView(View):
    """Public: the CA certificate in DER (``.crt``, the AIA caIssuers URL) or PEM.

    No sign-in: relying parties fetch it while building a path (RFC 5280 4.2.2.1), and a CA
    certificate is public by design. ETag: its SHA-256 fingerprint.
    """

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, name: str, encoding: str) -> HttpResponse:
        ca = selectors.ca_public_get(name=name)
        if ca is None:
            raise Http404("No such certificate authority.")
        if encoding == "der":
            content, content_type, tag = (
                bytes(ca.certificate_der),
                DER_CERTIFICATE_TYPE,
                ca.fingerprint_sha256.lower(),
            )
        else:
            content, content_type, tag = (
                ca.certificate_pem.encode("ascii"),
                PEM_TYPE,
                f"{ca.fingerprint_sha256.lower()}-pem",
            )
        response = _public_bytes(
            request,
            lambda: content,
            content_type=content_type,
            etag=tag,
            last_modified=ca.created_at,
            fresh_until=ca.not_after,
            max_age_cap=CA_CERTIFICATE_HTTP_MAX_AGE,
        )
        assert response is not None  # the content is at hand
        return response


@method_decorator(login_not_required, name="dispatch")
class CRLView(View):
    """Public: the CA's newest CRL as stored, DER (``.crl``, the CRL distribution point in
    every certificate) or PEM; ``<ca>-delta.crl`` / ``.pem``: its newest delta CRL. Never built or signed here (see `pki.crl`). ETag: the
    SHA-256 of the DER bytes; Last-Modified: thisUpdate; fresh until nextUpdate at most."""

    http_method_names = ["get", "head"]

    def get(
        self, request: HttpRequest, name: str, encoding: str, delta: bool = False
    ) -> HttpResponse:
        # A CRL published between reading the newest one's validators and its bytes makes a
        # try come back empty; the next one reads the new CRL.
        for _ in range(3):
            download = crl.crl_download_get(ca_name=name, delta=delta)
            if download is None:
                raise Http404("No such certificate authority.")
            if encoding == "der":
                content_type, tag = DER_CRL_TYPE, download.sha256
                load = functools.partial(crl.crl_download_der, download=download)
            else:
                content_type, tag = PEM_TYPE, f"{download.sha256}-pem"
                load = functools.partial(crl.crl_download_pem, download=download)
            response = _public_bytes(
                request,
                load,
                content_type=content_type,
                etag=tag,
                last_modified=download.this_update,
                fresh_until=download.next_update,
                max_age_cap=CRL_HTTP_MAX_AGE,
            )
            if response is not None:
                return response
        busy = HttpResponse(
            "The CRL is being replaced; try again.", status=503, content_type="text/plain"
        )
        busy["Retry-After"] = "1"
        return busy


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]+=*")


def _ocsp_request_from_path(encoded: str) -> bytes:
    """RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}.

    The server has already undone the URL encoding (%2B, %2F, %3D). base64url and missing
    padding, which some clients send, are accepted too; anything else gives b"" (which the
    responder answers with malformedRequest).
    """
    text = re.sub(r"\s", "", encoded)
    if not _BASE64_TEXT.fullmatch(text):
        return b""
    text = text.rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


@method_decorator([login_not_required, csrf_exempt], name="dispatch")
class OCSPView(View):
    """Public: the CA's OCSP responder (RFC 6960). POST ``application/ocsp-request`` to
    ``/pki/ocsp/<ca>``, or GET ``/pki/ocsp/<ca>/<base64 request>``. Always HTTP 200 with an
    ``application/ocsp-response`` (error statuses included), see `pki.ocsp`."""

    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest, name: str, encoded: str = "") -> HttpResponse:
        return self.answer(name, _ocsp_request_from_path(encoded), get=True)

    def post(self, request: HttpRequest, name: str, encoded: str = "") -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > ocsp.OCSP_MAX_REQUEST_BYTES:
            return self.answer(name, b"", get=False)  # not read: malformedRequest
        return self.answer(name, request.body, get=False)

    @staticmethod
    def answer(name: str, request_der: bytes, *, get: bool) -> HttpResponse:
        answer = ocsp.ocsp_respond(ca_name=name, request_der=request_der)
        response = HttpResponse(answer.der, content_type=OCSP_RESPONSE_TYPE)
        now = timezone.now()
        if get and answer.cacheable_until is not None:
            max_age = max(
                0, min(OCSP_HTTP_MAX_AGE, int((answer.cacheable_until - now).total_seconds()))
            )
            response["Cache-Control"] = f"public, max-age={max_age}"
            response["Expires"] = http_date(int(now.timestamp()) + max_age)
        else:
            response["Cache-Control"] = "no-store"
        return response
