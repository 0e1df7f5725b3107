"""The watchers page: CA operators add and remove extra recipients of expiry digests."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_on_form

from . import services
from .models import Watcher, WatchScope

MANAGE = "notifications.manage_watcher"


class WatcherForm(forms.Form):
    email = forms.EmailField(max_length=254)
    scope = forms.ChoiceField(choices=WatchScope.choices)
    ca_name = forms.CharField(required=False, max_length=64, label="CA name (scope CA)")
    profile = forms.CharField(required=False, max_length=32, label="Profile (scope profile)")
    certificate_id = forms.IntegerField(
        required=False, min_value=1, label="Certificate id (scope one certificate)"
    )


class WatcherListView(PortalPermissionMixin, View):
    permission_required = MANAGE

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return self._page(request, WatcherForm())

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = WatcherForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.watcher_add(
                    actor=request.user,
                    email=data["email"],
                    scope=data["scope"],
                    ca_name=data["ca_name"] or "",
                    profile=data["profile"] or "",
                    certificate_id=data["certificate_id"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                messages.success(request, "Watcher added.")
                return redirect("notifications:watchers")
        return self._page(request, form, status=400)

    def _page(
        self, request: AuthenticatedRequest, form: WatcherForm, status: int = 200
    ) -> HttpResponse:
        watchers = Watcher.objects.select_related("ca", "certificate").defer(
            "ca__sealed_private_key"
        )
        return render(
            request,
            "notifications/watchers.html",
            {"form": form, "watchers": watchers},
            status=status,
        )


class WatcherDeleteView(PortalPermissionMixin, View):
    permission_required = MANAGE
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        watcher = get_object_or_404(Watcher, pk=pk)
        if request.POST.get("confirm") != "yes":
            return HttpResponse(
                "Send confirm=yes to remove the watcher.", status=400, content_type="text/plain"
            )
        services.watcher_remove(actor=request.user, watcher=watcher)
        messages.success(request, "Watcher removed.")
        return redirect("notifications:watchers")
