"""The CRL health page and publishing CRLs now."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError

from .. import selectors, services
from ..models import CRLTrigger
from .common import (
    PUBLISH_CRL,
    VIEW_CA,
    ca_or_404,
)

# --- CRL health ------------------------------------------------------------------------------


class CRLHealthView(PortalPermissionMixin, View):
    """The CA's current CRL: number, dates, entries, size, signature, age, and a warning
    when it is due for replacement or expired; "publish now" for CA operators."""

    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = ca_or_404(request, name)
        return render(request, "pki/crl_health.html", {"health": selectors.crl_health(ca=ca)})


@method_decorator(never_cache, name="dispatch")
class CRLPublishView(PortalPermissionMixin, View):
    """POST: publish a new CRL for the CA now (audited as crl.published, trigger manual)."""

    permission_required = PUBLISH_CRL
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = ca_or_404(request, name)
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
