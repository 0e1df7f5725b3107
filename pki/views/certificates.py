"""Certificate list, detail and download."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views import View

from kmsportal.list_pages import filtered_list_page
from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin

from .. import selectors
from ..forms import (
    CertificateFilterForm,
)
from .common import (
    DER_CERTIFICATE_TYPE,
    PEM_TYPE,
    VIEW_CERTIFICATE,
    certificate_or_404,
    download,
)

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
        certificate = certificate_or_404(request, pk)
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
        certificate = certificate_or_404(request, pk)
        stem = f"{certificate.ca.name}-{certificate.serial_number_display}"
        if encoding == "pem":
            return download(
                certificate.certificate_pem, content_type=PEM_TYPE, filename=f"{stem}.pem"
            )
        if encoding == "der":
            return download(
                bytes(certificate.certificate_der),
                content_type=DER_CERTIFICATE_TYPE,
                filename=f"{stem}.crt",
            )
        if encoding == "chain":
            return download(
                selectors.certificate_fullchain_pem(certificate=certificate),
                content_type=PEM_TYPE,
                filename=f"{stem}-fullchain.pem",
            )
        raise Http404("No such format.")
