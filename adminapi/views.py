"""Portal pages for a person's own API tokens: list, create (after the second factor), revoke.

A new token is shown once: the POST keeps it sealed in the session and redirects; the GET that
follows takes it out (kmsportal.one_time), so a reload shows that it is gone, never the token.
"""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from accounts.mfa import SESSION_DEVICE, SESSION_VERIFIED, MfaSessionState, mfa_session_state
from audit.middleware import audit_denied_reason_set
from kmsportal.mixins import AuthenticatedRequest, SignedInMixin
from kmsportal.one_time import one_time_secret_keep, one_time_secret_take

from .models import ApiToken, TokenScope
from .tokens import MAX_DAYS, ApiTokenError, api_token_create, api_token_list, api_token_revoke


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What will use it, e.g. 'nightly key rotation job'."
    )
    scope = forms.ChoiceField(
        choices=TokenScope.choices,
        initial=TokenScope.READ_ONLY,
        widget=forms.RadioSelect,
        help_text="Read only never changes anything. 'My roles' may do what your roles allow, "
        "now and as they change.",
    )
    days = forms.IntegerField(
        min_value=1, max_value=MAX_DAYS, initial=30, label="Expires after (days)"
    )


def _verified_device(request: AuthenticatedRequest) -> uuid.UUID | None:
    """The authenticator this session passed the second factor with; None when it did not
    (a user who needs no second factor and has none must enrol one first)."""
    if mfa_session_state(request) is not MfaSessionState.SATISFIED:
        return None
    device = request.session.get(SESSION_DEVICE)
    if request.session.get(SESSION_VERIFIED) is not True or not device:
        return None
    # A satisfied state means the recorded device is the user's confirmed one: the text of
    # its UUID (accounts.mfa).
    return uuid.UUID(device)


def _purpose(token: ApiToken) -> str:
    return f"adminapi.ApiToken:{token.pk}:secret"


@method_decorator(never_cache, name="dispatch")
class TokenListView(SignedInMixin):
    template_name = "adminapi/token_list.html"

    def _render(
        self, request: AuthenticatedRequest, form: TokenCreateForm, status: int = 200
    ) -> HttpResponse:
        return render(
            request,
            self.template_name,
            {
                "tokens": api_token_list(user=request.user),
                "form": form,
                "may_create": _verified_device(request) is not None,
                "max_days": MAX_DAYS,
            },
            status=status,
        )

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return self._render(request, TokenCreateForm())

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        device = _verified_device(request)
        if device is None:
            audit_denied_reason_set(
                request, "API tokens need a session that passed the second factor"
            )
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied(
                "Making an API token needs a sign-in with your authenticator app: enrol one "
                "(Two-factor) and sign in again."
            )
        form = TokenCreateForm(request.POST)
        if form.is_valid():
            try:
                created = api_token_create(
                    actor=request.user,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    scope=form.cleaned_data["scope"],
                    days=form.cleaned_data["days"],
                    mfa_device_id=device,
                )
            except ApiTokenError as exc:
                form.add_error(None, exc.message)
            else:
                one_time_secret_keep(
                    request, purpose=_purpose(created.token), secret=created.secret
                )
                return HttpResponseRedirect(reverse("api_tokens:created", args=[created.token.pk]))
        return self._render(request, form, status=400)


@method_decorator(never_cache, name="dispatch")
class TokenCreatedView(SignedInMixin):
    """The new token, once; a reload answers 410 and says it is gone."""

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        token = ApiToken.objects.filter(pk=pk, user=request.user).first()
        if token is None:
            raise Http404("No such token of yours.")
        secret = one_time_secret_take(request, purpose=_purpose(token))
        response = render(
            request,
            "adminapi/token_created.html",
            {"token": token, "secret": secret},
            status=200 if secret else 410,
        )
        response["Cache-Control"] = "no-store"
        return response


class TokenRevokeView(SignedInMixin):
    """POST ``token`` (the id of one of the user's own tokens)."""

    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        pk = request.POST.get("token", "")
        token = (
            ApiToken.objects.filter(pk=int(pk), user=request.user).first()
            if pk.isdigit() and len(pk) < 16
            else None
        )
        if token is None:
            messages.error(request, "No such token of yours.")
            return HttpResponseRedirect(reverse("api_tokens:list"))
        try:
            api_token_revoke(actor=request.user, token=token)
        except ApiTokenError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Token {token.name} revoked: it stops working now.")
        return HttpResponseRedirect(reverse("api_tokens:list"))
