"""Validating a certificate and its chain the way relying parties do."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views import View

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_on_form

from .. import services
from ..forms import (
    ValidationForm,
)
from .common import (
    VIEW_CERTIFICATE,
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
