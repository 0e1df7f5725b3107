"""Portal pages for client services and grants (key custodians act; auditors read)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from kmsportal.crypto.operations import OPERATIONS
from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.one_time import one_time_secret_keep, one_time_secret_take
from kmsportal.views_errors import KMSError, refusal_flash, refusal_on_form
from kmsportal.widgets import utc_datetime_input

from . import approvals, clients, selectors, server_identity
from .models import Client, GrantVersions, SymmetricKey


class ClientCreateForm(forms.Form):
    name = forms.RegexField(
        regex=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$",
        max_length=64,
        error_messages={"invalid": "Use 1-64 lowercase letters, digits or '-'."},
    )
    description = forms.CharField(
        required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )


class GrantForm(forms.Form):
    key = forms.CharField(max_length=100, label="Key name")
    operations = forms.MultipleChoiceField(
        required=False,
        choices=[(op, op) for op in OPERATIONS],
        initial=["fetch"],
        widget=forms.CheckboxSelectMultiple,
        help_text="fetch releases the key itself; the others use it inside the KMS "
        "(docs/operations-api.md). Which ones exist depends on the key's type.",
    )
    versions = forms.ChoiceField(choices=GrantVersions.choices, initial=GrantVersions.PRIMARY)
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC)",
        widget=utc_datetime_input(),
    )
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why this client needs the key; a second key custodian reads it before "
        "approving a grant that includes fetch (unless the key's export policy is 'single').",
    )

    def clean_operations(self) -> list[str]:
        return self.cleaned_data["operations"] or ["fetch"]  # what a grant meant before


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why; when the client holds grants a second key custodian reads it.",
    )


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(choices=[(r, r) for r in clients.CLIENT_REVOCATION_REASONS])


def _client_or_404(request: AuthenticatedRequest, name: str) -> Client:
    client = selectors.client_get(user=request.user, name=name)
    if client is None:
        raise Http404("No such client.")
    return client


def _token_page(request: HttpRequest, client: Client, token: str) -> HttpResponse:
    """Post/Redirect/Get to the one-time token page: the token waits in the session (sealed)
    for that one GET; a reload then explains how to get a new one instead of re-posting."""
    one_time_secret_keep(request, purpose=_token_purpose(client), secret=token)
    return HttpResponseRedirect(reverse("clients:enrollment_token", args=[client.name]))


def _token_purpose(client: Client) -> str:
    return f"vault.Client:{client.pk}:enrollment-token"


@method_decorator(never_cache, name="dispatch")
class ClientTokenView(PortalPermissionMixin, View):
    """The enrollment token just made, shown once, with the enroll command and the root
    fingerprint to pin; afterwards, how to get a new token."""

    permission_required = "vault.change_client"

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        client = _client_or_404(request, name)
        token = one_time_secret_take(request, purpose=_token_purpose(client))
        root = server_identity.root_ca()
        context = {
            "client": client,
            "token": token,
            "public_url": settings.KMS_PUBLIC_URL,
            "root": root,
        }
        return render(request, "vault/client_token.html", context, status=200 if token else 410)


class ClientListView(PortalPermissionMixin, View):
    permission_required = "vault.view_client"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(
            request, "vault/client_list.html", {"clients": selectors.client_list(user=request.user)}
        )


@method_decorator(never_cache, name="dispatch")
class ClientCreateView(PortalPermissionMixin, View):
    permission_required = "vault.add_client"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "vault/client_create.html", {"form": ClientCreateForm()})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = ClientCreateForm(request.POST)
        if form.is_valid():
            try:
                client, token = clients.client_create(actor=request.user, **form.cleaned_data)
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                return _token_page(request, client, token)
        return render(request, "vault/client_create.html", {"form": form}, status=400)


def _detail(
    request: HttpRequest, client: Client, grant_form: GrantForm | None = None, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "vault/client_detail.html",
        {
            "client": client,
            "grants": selectors.client_grants(client=client),
            "deliveries": selectors.client_deliveries(client=client),
            "grant_form": grant_form or GrantForm(),
            "revoke_form": RevokeForm(),
            "grant_requests": client.grant_requests.filter(status="pending").select_related("key"),
        },
        status=status,
    )


class ClientDetailView(PortalPermissionMixin, View):
    permission_required = "vault.view_client"

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        return _detail(request, _client_or_404(request, name))


class GrantCreateView(PortalPermissionMixin, View):
    permission_required = "vault.add_grant"
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        client = _client_or_404(request, name)
        form = GrantForm(request.POST)
        if form.is_valid():
            key = SymmetricKey.objects.filter(name=form.cleaned_data["key"]).first()
            if key is None:
                form.add_error("key", "No key with this name.")
            else:
                try:
                    outcome = approvals.grant_request_create(
                        actor=request.user,
                        client=client,
                        key=key,
                        versions=form.cleaned_data["versions"],
                        expires_at=form.cleaned_data["expires_at"],
                        operations=form.cleaned_data["operations"],
                        reason=form.cleaned_data["reason"],
                    )
                except KMSError as exc:
                    refusal_on_form(form, exc)
                else:
                    if outcome.request is not None:
                        messages.success(
                            request,
                            f"Grant of {key.name} to {client.name} requested: a second key "
                            "custodian must approve it on its confirmation page (Approvals) "
                            "before the client can fetch the key.",
                        )
                    else:
                        allowed = ", ".join(form.cleaned_data["operations"])
                        messages.success(request, f"{client.name} may now {allowed} {key.name}.")
                    return HttpResponseRedirect(reverse("clients:detail", args=[client.name]))
        return _detail(request, client, grant_form=form, status=400)


class GrantWithdrawView(PortalPermissionMixin, View):
    permission_required = "vault.change_grant"
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, name: str, pk: int) -> HttpResponse:
        client = _client_or_404(request, name)
        grant = client.grants.filter(pk=pk).first()
        if grant is None:
            raise Http404("No such grant.")
        try:
            clients.grant_withdraw(actor=request.user, grant=grant)
            messages.success(request, f"Grant of {grant.key.name} to {client.name} withdrawn.")
        except KMSError as exc:
            refusal_flash(request, exc)
        return HttpResponseRedirect(reverse("clients:detail", args=[client.name]))


@method_decorator(never_cache, name="dispatch")
class ClientActionView(PortalPermissionMixin, View):
    """suspend, resume, revoke (with a reason), token (a fresh enrollment token)."""

    permission_required = "vault.view_client"
    ACTIONS = {
        "suspend": ("Suspend", "The client's requests are refused until it is resumed."),
        "resume": ("Resume", "The client may fetch its granted keys again."),
        "revoke": (
            "Revoke",
            "The client is cut off for good and its certificate is revoked "
            "in the same transaction.",
        ),
        "token": (
            "New enrollment token",
            "A fresh one-time token lets the service enroll a new key pair; an unused earlier "
            "token stops working. Whoever enrolls with it can fetch every key this client is "
            "granted: while it holds live grants, a second key custodian must approve (the "
            "approver receives the token).",
        ),
    }

    def _check(self, action: str) -> tuple[str, str]:
        if action not in self.ACTIONS:
            raise Http404("No such action.")
        if not self.request.user.has_perm("vault.change_client"):
            raise PermissionDenied("managing clients needs vault.change_client")
        return self.ACTIONS[action]

    def get(self, request: AuthenticatedRequest, name: str, action: str) -> HttpResponse:
        title, explanation = self._check(action)
        client = _client_or_404(request, name)
        return render(
            request,
            "vault/client_action.html",
            {
                "client": client,
                "title": title,
                "explanation": explanation,
                "form": {"revoke": RevokeForm(), "token": ReasonForm()}.get(action),
            },
        )

    def post(self, request: AuthenticatedRequest, name: str, action: str) -> HttpResponse:
        title, explanation = self._check(action)
        client = _client_or_404(request, name)
        try:
            if action == "suspend":
                clients.client_suspend(actor=request.user, client=client)
            elif action == "resume":
                clients.client_resume(actor=request.user, client=client)
            elif action == "token":
                form: forms.Form = ReasonForm(request.POST)
                if not form.is_valid():
                    return render(
                        request,
                        "vault/client_action.html",
                        {
                            "client": client,
                            "title": title,
                            "explanation": explanation,
                            "form": form,
                        },
                        status=400,
                    )
                outcome = approvals.client_reenrollment_request(
                    actor=request.user, client=client, reason=form.cleaned_data["reason"]
                )
                if outcome.token is not None:
                    return _token_page(request, client, outcome.token)
                messages.success(
                    request,
                    f"{client.name} holds live grants: the new enrollment token waits for a "
                    "second key custodian's approval (Approvals); the approver receives it.",
                )
                return HttpResponseRedirect(reverse("clients:detail", args=[client.name]))
            else:
                form = RevokeForm(request.POST)
                if not form.is_valid():
                    return render(
                        request,
                        "vault/client_action.html",
                        {
                            "client": client,
                            "title": title,
                            "explanation": explanation,
                            "form": form,
                        },
                        status=400,
                    )
                clients.client_revoke(
                    actor=request.user, client=client, reason=form.cleaned_data["reason"]
                )
        except KMSError as exc:
            refusal_flash(request, exc)
        else:
            messages.success(request, f"{title}: done for {client.name}.")
        return HttpResponseRedirect(reverse("clients:detail", args=[client.name]))
