"""PKI pages: CAs, certificates, issuance behind a confirmation page, validation,
revocation behind a confirmation page, the CRL health page; and the public views relying
parties use without signing in: CA certificate (the AIA caIssuers URL), CRL (the CRL
distribution point) and OCSP.

Views parse input, check permissions (on every request, GET and POST), call one service or
selector and render. Domain errors become form errors with status 400. Private keys never
reach a view, except the generated one inside the encrypted PKCS#12 it returns once.

The public views are marked `login_not_required` (exempt from Django's LoginRequiredMiddleware
should it ever be enabled), work over plain HTTP and with DEBUG off, and serve stored bytes
with ETag, Last-Modified, Expires and Cache-Control (bounded by the CRL's nextUpdate or the
certificate's notAfter); conditional GET and HEAD answer 304 without a body. OCSP is
CSRF-exempt: its clients are not browsers and its POST body is a signed-for request, not a
form.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.utils.decorators import method_decorator
from django.utils.http import http_date
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters

from kmsportal.list_pages import filtered_list_page
from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_flash, refusal_on_form

from . import approvals, crl, ocsp, selectors, services
from .forms import (
    CACreateForm,
    CADisableForm,
    CARevocationDecisionForm,
    CARevocationRequestForm,
    CertificateFilterForm,
    CSRRequestForm,
    CSRReviewForm,
    GeneratedIssueForm,
    GeneratedRequestForm,
    RevokeForm,
    ValidationForm,
)
from .generated_delivery import (
    generated_key_delivery_get,
    generated_key_download,
    generated_key_issue_once,
)
from .models import CA_REVOCATION_REQUEST_TTL, Certificate, CertificateAuthority, CRLTrigger

VIEW_CA = selectors.VIEW_CA
VIEW_CERTIFICATE = selectors.VIEW_CERTIFICATE
MANAGE_CA = "pki.manage_certificateauthority"
ISSUE = "pki.issue_certificate"
REVOKE = selectors.REVOKE
VIEW_CA_REVOCATION_REQUEST = selectors.VIEW_CA_REVOCATION_REQUEST
PUBLISH_CRL = "pki.publish_crl"

PEM_TYPE = "application/x-pem-file"
DER_CERTIFICATE_TYPE = "application/pkix-cert"
PKCS12_TYPE = "application/x-pkcs12"
DER_CRL_TYPE = "application/pkix-crl"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"

#: HTTP caches may keep a CRL this long at most (and never past its nextUpdate): a
#: revocation reaches relying parties that revalidate within minutes, and revalidation with
#: the ETag costs a 304 without a body.
CRL_HTTP_MAX_AGE = 300
#: A CA certificate does not change; caches may keep it a day (never past its notAfter).
CA_CERTIFICATE_HTTP_MAX_AGE = 86400
#: Responses to OCSP GET requests without a nonce (RFC 5019 style) may be cached this long.
OCSP_HTTP_MAX_AGE = 300


def _ca_or_404(request: AuthenticatedRequest, name: str) -> CertificateAuthority:
    ca = selectors.ca_get(user=request.user, name=name)
    if ca is None:
        raise Http404("No such certificate authority.")
    return ca


def _certificate_or_404(request: AuthenticatedRequest, pk: int) -> Certificate:
    certificate = selectors.certificate_get(user=request.user, pk=pk)
    if certificate is None:
        raise Http404("No such certificate.")
    return certificate


def _download(content: bytes | str, *, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


FormT = TypeVar("FormT", bound=forms.Form)


def _hide(form: FormT, *names: str) -> FormT:
    """Carry these fields to the next step unchanged: hidden inputs (checked again there)."""
    for name in names:
        form.fields[name].widget = forms.HiddenInput()
    return form


# --- certificate authorities -----------------------------------------------------------------


class CAListView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "pki/ca_list.html", {"cas": selectors.ca_list(user=request.user)})


class CADetailView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        certificate = selectors.ca_own_certificate(ca=ca)
        return render(
            request,
            "pki/ca_detail.html",
            {
                "detail": selectors.ca_detail(ca=ca),
                "ca_certificate": certificate,
                "revocation_requests": (
                    selectors.ca_revocation_requests_of(user=request.user, certificate=certificate)
                    if certificate is not None
                    else []
                ),
            },
        )


CA_FIELDS = ("name", "subject", "parent", "key_type", "days", "path_length")


@method_decorator(never_cache, name="dispatch")
class CACreateView(PortalPermissionMixin, View):
    """GET: the form. POST: a confirmation page showing the CA certificate that would be
    made; POST with ``confirm=yes`` (from that page): create it."""

    permission_required = MANAGE_CA

    def form(self, data: Any = None) -> CACreateForm:
        return CACreateForm(data, parents=selectors.ca_parent_choices(user=self.request.user))

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "pki/ca_create.html", {"form": self.form()})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = self.form(request.POST)
        if not form.is_valid():
            return render(request, "pki/ca_create.html", {"form": form}, status=400)
        data = form.cleaned_data
        parent = None
        if data["parent"]:
            parent = _ca_or_404(request, data["parent"])
        arguments = {
            "name": data["name"],
            "subject": data["subject"],
            "parent": parent,
            "key_type": data["key_type"],
            "days": data["days"],
            "path_length": data["path_length"],
        }
        try:
            if request.POST.get("confirm") == "yes":
                ca = services.certificate_authority_create(actor=request.user, **arguments)
                messages.success(
                    request, f"Certificate authority {ca.name} created ({ca.subject})."
                )
                return HttpResponseRedirect(reverse("pki:ca_detail", args=[ca.name]))
            preview = services.certificate_authority_preview(**arguments)
        except KMSError as exc:
            refusal_on_form(form, exc)
            return render(request, "pki/ca_create.html", {"form": form}, status=400)
        return render(
            request,
            "pki/ca_create_confirm.html",
            {"form": _hide(self.form(request.POST), *CA_FIELDS), "preview": preview},
        )


@method_decorator(never_cache, name="dispatch")
class CADisableView(PortalPermissionMixin, View):
    permission_required = MANAGE_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return render(request, "pki/ca_disable.html", {"ca": ca, "form": CADisableForm()})

    def post(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        form = CADisableForm(request.POST)
        if form.is_valid():
            try:
                services.certificate_authority_disable(
                    actor=request.user, ca=ca, reason=form.cleaned_data["reason"]
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                messages.success(request, f"{ca.name} is disabled; it issues nothing more.")
                return HttpResponseRedirect(reverse("pki:ca_detail", args=[ca.name]))
        return render(request, "pki/ca_disable.html", {"ca": ca, "form": form}, status=400)


class CAChainView(PortalPermissionMixin, View):
    """The CA's certificate and its ancestors as one PEM file."""

    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return _download(
            selectors.ca_chain_pem(ca=ca), content_type=PEM_TYPE, filename=f"{ca.name}-chain.pem"
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


# --- CRL health ------------------------------------------------------------------------------


class CRLHealthView(PortalPermissionMixin, View):
    """The CA's current CRL: number, dates, entries, size, signature, age, and a warning
    when it is due for replacement or expired; "publish now" for CA operators."""

    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return render(request, "pki/crl_health.html", {"health": selectors.crl_health(ca=ca)})


@method_decorator(never_cache, name="dispatch")
class CRLPublishView(PortalPermissionMixin, View):
    """POST: publish a new CRL for the CA now (audited as crl.published, trigger manual)."""

    permission_required = PUBLISH_CRL
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        try:
            row = services.crl_publish(actor=request.user, ca=ca, trigger=CRLTrigger.MANUAL)
        except KMSError as exc:
            messages.error(request, f"No CRL was published: {exc.message}")
        else:
            assert row is not None  # forced publication always publishes
            messages.success(
                request,
                f"CRL #{row.crl_number} of {ca.name} published with {row.entry_count} "
                f"entries, valid until {row.next_update:%Y-%m-%d %H:%M} UTC.",
            )
        return HttpResponseRedirect(reverse("pki:crl_health", args=[ca.name]))


# --- certificates ----------------------------------------------------------------------------


class CertificateListView(PortalPermissionMixin, View):
    permission_required = VIEW_CERTIFICATE

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        cas = [(ca.name, ca.name) for ca in selectors.ca_list(user=request.user)]
        return filtered_list_page(
            request,
            "pki/certificate_list.html",
            CertificateFilterForm(
                request.GET, cas=cas, profiles=selectors.profile_filter_choices()
            ),
            lambda data: selectors.certificate_page(
                user=request.user,
                ca=data["ca"],
                profile=data["profile"],
                status=data["status"],
                expiring_within_days=data["expiring"],
                validity=data["validity"],
                expires_after=data["expires_after"],
                expires_before=data["expires_before"],
                search=data["q"],
                after=data["after"],
            ),
        )


class CertificateDetailView(PortalPermissionMixin, View):
    permission_required = VIEW_CERTIFICATE

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        certified = selectors.ca_of_certificate(certificate=certificate)
        return render(
            request,
            "pki/certificate_detail.html",
            {
                "detail": selectors.certificate_detail(certificate=certificate),
                "certified_ca": certified,
                "revocation_requests": (
                    selectors.ca_revocation_requests_of(user=request.user, certificate=certificate)
                    if certified is not None
                    else []
                ),
            },
        )


class CertificateDownloadView(PortalPermissionMixin, View):
    """PEM, DER, or the full chain (certificate and intermediates) as PEM."""

    permission_required = VIEW_CERTIFICATE

    def get(self, request: AuthenticatedRequest, pk: int, encoding: str) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        stem = f"{certificate.ca.name}-{certificate.serial_number_display}"
        if encoding == "pem":
            return _download(
                certificate.certificate_pem, content_type=PEM_TYPE, filename=f"{stem}.pem"
            )
        if encoding == "der":
            return _download(
                bytes(certificate.certificate_der),
                content_type=DER_CERTIFICATE_TYPE,
                filename=f"{stem}.crt",
            )
        if encoding == "chain":
            return _download(
                selectors.certificate_fullchain_pem(certificate=certificate),
                content_type=PEM_TYPE,
                filename=f"{stem}-fullchain.pem",
            )
        raise Http404("No such format.")


# --- revocation ------------------------------------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class CertificateRevokeView(PortalPermissionMixin, View):
    """GET: reason and optional invalidity date. POST: the confirmation page (what will be
    revoked, with any CA and certificates below it); POST with ``confirm=yes``: revoke.

    The certificate of a CA in this portal is never revoked here in one step (two-person
    rule): its confirmation step asks for the revocation (``pki.approvals``), and a second
    person approves it in the CA revocation approvals inbox."""

    permission_required = REVOKE

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        certified = selectors.ca_of_certificate(certificate=certificate)
        return render(
            request,
            "pki/certificate_revoke.html",
            {
                "certificate": certificate,
                "form": RevokeForm() if certified is None else CARevocationRequestForm(),
                "certified_ca": certified,
            },
        )

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        certified = selectors.ca_of_certificate(certificate=certificate)
        form = (RevokeForm if certified is None else CARevocationRequestForm)(request.POST)
        if form.is_valid():
            arguments = {
                "certificate": certificate,
                "reason": form.cleaned_data["reason"],
                "invalidity_date": form.cleaned_data["invalidity_date"],
            }
            try:
                if request.POST.get("confirm") == "yes":
                    if certified is not None:
                        return self.request_revocation(
                            certificate, arguments, form.cleaned_data["comment"]
                        )
                    revoked = services.certificate_revoke(actor=request.user, **arguments)
                    messages.success(
                        request,
                        f"Certificate {revoked.serial_number_display} of {revoked.ca.name} "
                        f"revoked ({revoked.revocation_reason}); the CRL was republished.",
                    )
                    return HttpResponseRedirect(
                        reverse("pki:certificate_detail", args=[certificate.pk])
                    )
                preview = services.certificate_revocation_preview(**arguments)
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                confirm_form = _hide(type(form)(request.POST), "reason", "invalidity_date")
                return render(
                    request,
                    "pki/certificate_revoke_confirm.html",
                    {
                        "certificate": certificate,
                        "preview": preview,
                        "form": confirm_form,
                        "two_person": certified is not None,
                        "ttl_days": CA_REVOCATION_REQUEST_TTL.days,
                    },
                )
        return render(
            request,
            "pki/certificate_revoke.html",
            {"certificate": certificate, "form": form, "certified_ca": certified},
            status=400,
        )

    def request_revocation(
        self, certificate: Certificate, arguments: dict[str, Any], comment: str
    ) -> HttpResponse:
        """The confirmation of a CA's certificate: ask, do not revoke."""
        asked = approvals.ca_revocation_request(
            actor=self.request.user, comment=comment, **arguments
        )
        messages.success(
            self.request,
            f"Revocation of CA {asked.ca.name} requested: nothing is revoked until a second "
            "person who may revoke certificates approves it (by "
            f"{asked.expires_at:%Y-%m-%d %H:%M} UTC).",
        )
        return HttpResponseRedirect(reverse("pki:ca_revocation_approvals"))


@method_decorator(never_cache, name="dispatch")
class CertificateReleaseView(PortalPermissionMixin, View):
    """GET: confirm releasing a hold. POST: release it (the next CRL no longer lists it)."""

    permission_required = REVOKE

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        return render(request, "pki/certificate_release.html", {"certificate": certificate})

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        try:
            services.certificate_release(actor=request.user, certificate=certificate)
        except KMSError as exc:
            return render(
                request,
                "pki/certificate_release.html",
                {"certificate": certificate, "error": exc.message},
                status=400,
            )
        messages.success(
            request,
            f"Certificate {certificate.serial_number_display} is valid again; the CRL was "
            "republished without it.",
        )
        return HttpResponseRedirect(reverse("pki:certificate_detail", args=[certificate.pk]))


# --- CA revocation approvals (two-person rule) ----------------------------------------------


class CARevocationApprovalsView(PortalPermissionMixin, View):
    """Pending CA revocation requests, each with what approving it would revoke."""

    permission_required = VIEW_CA_REVOCATION_REQUEST

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(
            request,
            "pki/ca_revocation_approvals.html",
            {
                "rows": selectors.ca_revocation_requests_pending(user=request.user),
                "ttl_days": CA_REVOCATION_REQUEST_TTL.days,
            },
        )


class CARevocationDecisionView(PortalPermissionMixin, View):
    """POST approve, reject or withdraw (the requester's own) a CA revocation request."""

    permission_required = REVOKE
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, pk: int, decision: str) -> HttpResponse:
        asked = selectors.ca_revocation_request_get(user=request.user, pk=pk)
        if asked is None or decision not in ("approve", "reject", "withdraw"):
            raise Http404("No such request.")
        form = CARevocationDecisionForm(request.POST)
        comment = form.cleaned_data["comment"] if form.is_valid() else ""
        try:
            if decision == "approve":
                revoked = approvals.ca_revocation_approve(actor=request.user, request=asked)
                messages.success(
                    request,
                    f"Approved: CA {asked.ca.name} is revoked ({revoked.revocation_reason}) with "
                    "everything below it; the CRLs were republished.",
                )
            elif decision == "reject":
                approvals.ca_revocation_reject(actor=request.user, request=asked, comment=comment)
                messages.success(request, f"Revocation of CA {asked.ca.name} rejected.")
            else:
                approvals.ca_revocation_withdraw(actor=request.user, request=asked)
                messages.success(request, f"Revocation of CA {asked.ca.name} withdrawn.")
        except KMSError as exc:
            refusal_flash(request, exc)
        return HttpResponseRedirect(reverse("pki:ca_revocation_approvals"))


# --- issuance --------------------------------------------------------------------------------


class _IssueMixin(PortalPermissionMixin):
    permission_required = ISSUE

    def choices(self) -> dict[str, list[tuple[str, str]]]:
        return {
            "cas": selectors.ca_issuing_choices(user=self.request.user),
            "profiles": selectors.profile_choices(),
        }

    def issuing_ca(self, form: forms.Form) -> CertificateAuthority:
        return _ca_or_404(self.request, form.cleaned_data["ca"])


CSR_REVIEW_CARRIED = ("csr_pem", "ca", "profile", "days")


@method_decorator(never_cache, name="dispatch")
class IssueFromCSRView(_IssueMixin, View):
    """Step ``request``: paste or upload a CSR, choose CA, profile, validity. Step
    ``review``: the confirmation page shows exactly what will be signed; subject and SANs
    can be changed there (which shows the page again). Step ``issue``: sign."""

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = CSRRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_csr.html", {"form": form})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        step = request.POST.get("step", "request")
        if step == "request":
            return self.request_step()
        form = CSRReviewForm(request.POST, **self.choices())
        if not form.is_valid():
            return self.review_page(form, None, status=400)
        data = form.cleaned_data
        arguments = {
            "ca": self.issuing_ca(form),
            "csr_pem_or_der": data["csr_pem"].encode("utf-8"),
            "profile": data["profile"],
            "subject_override": data["subject"],
            "sans_override": data["san_lines"],
            "days": data["days"],
        }
        try:
            if step == "issue":
                certificate = services.certificate_issue_from_csr(actor=request.user, **arguments)
                messages.success(
                    request,
                    f"Certificate issued: serial {certificate.serial_number_display} "
                    f"by {certificate.ca.name}.",
                )
                return HttpResponseRedirect(
                    reverse("pki:certificate_detail", args=[certificate.pk])
                )
            preview = services.certificate_csr_preview(**arguments)
        except KMSError as exc:
            refusal_on_form(form, exc)
            return self.review_page(form, None, status=400)
        return self.review_page(self.review_form(preview), preview)

    def request_step(self) -> HttpResponse:
        form = CSRRequestForm(self.request.POST, self.request.FILES, **self.choices())
        if form.is_valid():
            data = form.cleaned_data
            try:
                preview = services.certificate_csr_preview(
                    ca=self.issuing_ca(form),
                    csr_pem_or_der=data["csr_data"],
                    profile=data["profile"],
                    days=data["days"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                return self.review_page(self.review_form(preview), preview)
        return render(self.request, "pki/issue_csr.html", {"form": form}, status=400)

    def review_form(self, preview: services.IssuePreview) -> CSRReviewForm:
        return CSRReviewForm(
            {
                "csr_pem": preview.csr_pem,
                "ca": preview.ca.name,
                "profile": preview.profile,
                "days": preview.days or "",
                "subject": preview.subject,
                "sans": "\n".join(preview.sans),
            },
            **self.choices(),
        )

    def review_page(
        self, form: CSRReviewForm, preview: services.IssuePreview | None, status: int = 200
    ) -> HttpResponse:
        """The confirmation page: what will be signed, the issue button (every value in
        hidden fields, exactly as shown) and the form to change subject or SANs."""
        issue_form = None
        if preview is not None:
            issue_form = _hide(
                CSRReviewForm(form.data, **self.choices(), auto_id="issue_%s"),
                *CSR_REVIEW_CARRIED,
                "subject",
                "sans",
            )
        return render(
            self.request,
            "pki/issue_csr_confirm.html",
            {
                "preview": preview,
                "issue_form": issue_form,
                "edit_form": _hide(form, *CSR_REVIEW_CARRIED),
            },
            status=status,
        )


GENERATED_CARRIED = ("ca", "profile", "subject", "sans", "key_type", "days")


@method_decorator(never_cache, name="dispatch")
@method_decorator(sensitive_post_parameters("password1", "password2"), name="dispatch")
class IssueGeneratedView(_IssueMixin, View):
    """Step ``request``: the certificate's content. Step ``confirm`` (the confirmation page)
    shows what will be signed and asks for the password twice; its POST answers with the
    PKCS#12 (or PEM bundle) itself, once, never cached. Nothing of the key is kept."""

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = GeneratedRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_generated.html", {"form": form})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        if request.POST.get("step") == "issue":
            return self.issue_step()
        form = GeneratedRequestForm(request.POST, **self.choices())
        if form.is_valid():
            try:
                preview = self.preview(form)
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                carried = {name: request.POST.get(name, "") for name in GENERATED_CARRIED}
                carried["idempotency_token"] = secrets.token_urlsafe(24)
                return self.confirm_page(self.issue_form(initial=carried), preview)
        return render(request, "pki/issue_generated.html", {"form": form}, status=400)

    def preview(self, form: forms.Form) -> services.IssuePreview:
        data = form.cleaned_data
        return services.certificate_generated_preview(
            ca=self.issuing_ca(form),
            subject=data["subject"],
            sans=data["san_lines"],
            profile=data["profile"],
            days=data["days"],
            key_type=data["key_type"],
        )

    def issue_form(
        self, data: Any = None, initial: dict[str, str] | None = None
    ) -> GeneratedIssueForm:
        """The confirmation page's form: the content travels hidden, the password is asked."""
        form = GeneratedIssueForm(data, initial=initial, **self.choices())
        return _hide(form, *GENERATED_CARRIED)

    def confirm_page(
        self, form: GeneratedIssueForm, preview: services.IssuePreview | None, status: int = 200
    ) -> HttpResponse:
        return render(
            self.request,
            "pki/issue_generated_confirm.html",
            {"form": form, "preview": preview},
            status=status,
        )

    def issue_step(self) -> HttpResponse:
        form = self.issue_form(self.request.POST)
        preview = None
        if form.is_valid():
            data = form.cleaned_data
            try:
                submission = generated_key_issue_once(
                    actor=self.request.user,
                    token=data["idempotency_token"],
                    ca=self.issuing_ca(form),
                    subject=data["subject"],
                    sans=data["san_lines"],
                    profile=data["profile"],
                    days=data["days"],
                    key_type=data["key_type"],
                    pkcs12_password=data["password1"],
                    pem_bundle=data["delivery"] == "pem",
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                if not submission.issued_now:
                    messages.info(
                        self.request,
                        "This form was already submitted: nothing was issued again.",
                    )
                # Post/Redirect/Get: a reload shows the result, never submits again.
                return HttpResponseRedirect(
                    reverse("pki:issue_generated_result", args=[submission.delivery.pk])
                )
        try:
            # Show what would be signed again next to the errors, if it can still be built.
            check = GeneratedRequestForm(self.request.POST, **self.choices())
            preview = self.preview(check) if check.is_valid() else None
        except KMSError:
            preview = None
        # The passwords are never sent back into the page.
        return self.confirm_page(form, preview, status=400)


@method_decorator(never_cache, name="dispatch")
class IssueGeneratedResultView(PortalPermissionMixin, View):
    """After generated-key issuance: serial, link, and the one download (POST, so that no
    link prefetcher can spend it). Only the operator who issued sees it."""

    permission_required = ISSUE

    def get(self, request: AuthenticatedRequest, delivery_id: uuid.UUID) -> HttpResponse:
        return self.page(delivery_id)

    def post(self, request: AuthenticatedRequest, delivery_id: uuid.UUID) -> HttpResponse:
        delivered = generated_key_download(user=request.user, delivery_id=delivery_id)
        if delivered is None:
            messages.error(
                request,
                "The file was already downloaded or has expired: it is offered once. Issue a "
                "new certificate if the file is lost.",
            )
            return self.page(delivery_id, status=410)
        return _download(
            delivered.content, content_type=delivered.content_type, filename=delivered.filename
        )

    def page(self, delivery_id: uuid.UUID, status: int = 200) -> HttpResponse:
        delivery = generated_key_delivery_get(user=self.request.user, delivery_id=delivery_id)
        if delivery is None:
            raise Http404("no such issuance")
        return render(
            self.request, "pki/issue_generated_result.html", {"delivery": delivery}, status=status
        )


# --- validation ------------------------------------------------------------------------------


class ValidateView(PortalPermissionMixin, View):
    """Paste or upload a certificate (and optionally a chain): every check, pass or fail."""

    permission_required = VIEW_CERTIFICATE

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "pki/validate.html", {"form": ValidationForm(), "outcome": None})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = ValidationForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                outcome = services.certificate_validate(
                    actor=request.user,
                    pem_data=data["certificate_data"],
                    chain_pem=data["chain_data"],
                    purpose=data["purpose"],
                    hostname=data["hostname"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                return render(request, "pki/validate.html", {"form": form, "outcome": outcome})
        return render(request, "pki/validate.html", {"form": form, "outcome": None}, status=400)
