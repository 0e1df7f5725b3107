"""Revocation behind a confirmation page, release from hold, and the two-person inbox for
CA revocations."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_flash, refusal_on_form

from .. import approvals, selectors, services
from ..forms import (
    CARevocationDecisionForm,
    CARevocationRequestForm,
    RevokeForm,
)
from ..models import CA_REVOCATION_REQUEST_TTL, Certificate
from .common import (
    REVOKE,
    VIEW_CA_REVOCATION_REQUEST,
    certificate_or_404,
    hide,
)

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
        certificate = certificate_or_404(request, pk)
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
        certificate = certificate_or_404(request, pk)
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
                confirm_form = hide(type(form)(request.POST), "reason", "invalidity_date")
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
        certificate = certificate_or_404(request, pk)
        return render(request, "pki/certificate_release.html", {"certificate": certificate})

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        certificate = certificate_or_404(request, pk)
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
    """POST reject, or withdraw (the requester's own), a CA revocation request. An old
    "approve" link only leads to the confirmation page, which alone approves (it shows the
    CAs and certificates revoked with it): nothing changes here."""

    permission_required = REVOKE
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, pk: int, decision: str) -> HttpResponse:
        asked = selectors.ca_revocation_request_get(user=request.user, pk=pk)
        if asked is None or decision not in ("approve", "reject", "withdraw"):
            raise Http404("No such request.")
        if decision == "approve":
            messages.info(
                request, "Nothing was approved: read what approving changes, then decide here."
            )
            return HttpResponseRedirect(reverse("approvals:confirm", args=["ca-revocation", pk]))
        form = CARevocationDecisionForm(request.POST)
        comment = form.cleaned_data["comment"] if form.is_valid() else ""
        try:
            if decision == "reject":
                approvals.ca_revocation_reject(actor=request.user, request=asked, comment=comment)
                messages.success(request, f"Revocation of CA {asked.ca.name} rejected.")
            else:
                approvals.ca_revocation_withdraw(actor=request.user, request=asked)
                messages.success(request, f"Revocation of CA {asked.ca.name} withdrawn.")
        except KMSError as exc:
            refusal_flash(request, exc)
        return HttpResponseRedirect(reverse("pki:ca_revocation_approvals"))
