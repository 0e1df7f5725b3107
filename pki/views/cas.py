"""Certificate authority pages: list, detail, create (behind a confirmation page), disable, chain."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_on_form

from .. import selectors, services
from ..forms import (
    CACreateForm,
    CADisableForm,
)
from .common import (
    MANAGE_CA,
    PEM_TYPE,
    VIEW_CA,
    ca_or_404,
    download,
    hide,
)

# --- certificate authorities -----------------------------------------------------------------


class CAListView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "pki/ca_list.html", {"cas": selectors.ca_list(user=request.user)})


class CADetailView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = ca_or_404(request, name)
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
            parent = ca_or_404(request, data["parent"])
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
            {"form": hide(self.form(request.POST), *CA_FIELDS), "preview": preview},
        )


@method_decorator(never_cache, name="dispatch")
class CADisableView(PortalPermissionMixin, View):
    permission_required = MANAGE_CA

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = ca_or_404(request, name)
        return render(request, "pki/ca_disable.html", {"ca": ca, "form": CADisableForm()})

    def post(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        ca = ca_or_404(request, name)
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
        ca = ca_or_404(request, name)
        return download(
            selectors.ca_chain_pem(ca=ca), content_type=PEM_TYPE, filename=f"{ca.name}-chain.pem"
        )
