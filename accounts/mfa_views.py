"""Pages of multi-factor sign-in: verify, enrol, manage, and the administrator's reset.

Views parse, check, call one service (accounts.mfa), render. Every page that takes a code
is `never_cache` and hides the code from error reports (`sensitive_post_parameters`); wrong
codes are throttled per user (accounts.throttle) before any code is looked at.
"""

from __future__ import annotations

import segno
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import SafeString, mark_safe
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from kmsportal.mixins import AuthenticatedRequest, SignedInMixin
from kmsportal.views_errors import refusal_flash, refusal_on_form

from . import mfa, throttle
from .forms import MfaCodeForm, MfaTotpCodeForm
from .views import UserActionView


def _next_url(request: HttpRequest) -> str:
    """The `next` the user came with, if it stays on this site; else the dashboard."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _with_next(url: str, request: HttpRequest) -> str:
    return f"{url}?{urlencode({'next': _next_url(request)})}"


def _qr_svg(uri: str) -> SafeString:
    """The provisioning URI as an inline SVG QR code, drawn on the server by segno.

    Only segno's own output is marked safe, and only without any `style`: the CSP allows no
    inline style, so the drawing uses presentation attributes (fill, stroke) alone.
    """
    svg = segno.make(uri, error="m").svg_inline(
        scale=5, border=4, dark="#000", light="#fff", title="QR code of your authenticator secret"
    )
    if "style" in svg.lower():
        raise ValueError("the QR code SVG must not carry inline style")
    return mark_safe(svg)  # noqa: S308 (segno's output, checked above; holds no user input)


def _throttled(
    request: AuthenticatedRequest, template: str, context: dict[str, object]
) -> HttpResponse | None:
    """A 429 page if this user's wrong codes are locked out (checked before any code)."""
    lockout = throttle.mfa_lockout(user_id=request.user.pk)
    if lockout is None:
        return None
    mfa.mfa_lockout_record(user=request.user, retry_after=lockout.retry_after)
    minutes = max(1, lockout.retry_after // 60)
    response = render(request, template, {**context, "locked_minutes": minutes}, status=429)
    response["Retry-After"] = str(lockout.retry_after)
    return response


def _recovery_codes_page(request: HttpRequest, *, codes: list[str], action: str) -> HttpResponse:
    """The recovery codes, in this one response only: they are stored nowhere in clear."""
    response = render(
        request,
        "accounts/mfa_recovery_codes.html",
        {"codes": codes, "action": action, "continue_url": _next_url(request)},
    )
    response["Cache-Control"] = "no-store"
    return response


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
@method_decorator(never_cache, name="dispatch")
class MfaVerifyView(SignedInMixin, View):
    """The second sign-in step: a code from the authenticator app or a recovery code."""

    template_name = "accounts/mfa_verify.html"

    def _elsewhere(self, request: AuthenticatedRequest) -> HttpResponse | None:
        state = mfa.mfa_session_state(request)
        if state is mfa.MfaSessionState.PENDING_ENROLL:
            return HttpResponseRedirect(_with_next(reverse("accounts:mfa_enroll"), request))
        if state is not mfa.MfaSessionState.PENDING_VERIFY:
            return HttpResponseRedirect(_next_url(request))  # nothing to verify
        return None

    def _render(
        self, request: AuthenticatedRequest, form: MfaCodeForm, status: int = 200
    ) -> HttpResponse:
        context = {"form": form, "next": _next_url(request)}
        return render(request, self.template_name, context, status=status)

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return self._elsewhere(request) or self._render(request, MfaCodeForm())

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        elsewhere = self._elsewhere(request)
        if elsewhere is not None:
            return elsewhere
        locked = _throttled(
            request, self.template_name, {"form": MfaCodeForm(), "next": _next_url(request)}
        )
        if locked is not None:
            return locked
        form = MfaCodeForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            method = mfa.mfa_verify(user=request.user, code=form.cleaned_data["code"])
        except mfa.MfaCodeInvalid as exc:
            throttle.mfa_failure_count(user_id=request.user.pk)
            form.add_error("code", str(exc))
            return self._render(request, form, status=400)
        except mfa.MfaNotEnrolled:
            return HttpResponseRedirect(_with_next(reverse("accounts:mfa_enroll"), request))
        throttle.mfa_success_reset(user_id=request.user.pk)
        mfa.mfa_session_verified(request=request, user=request.user)
        if method == mfa.MfaMethod.RECOVERY_CODE:
            left = mfa.mfa_status(user=request.user).recovery_codes_left
            messages.warning(
                request,
                f"You signed in with a recovery code; {left} left. "
                "Generate new ones under Two-factor if you are running out.",
            )
        return HttpResponseRedirect(_next_url(request))


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
@method_decorator(never_cache, name="dispatch")
class MfaEnrollView(SignedInMixin, View):
    """Set up an authenticator app: QR code and secret, then a first code to confirm it."""

    template_name = "accounts/mfa_enroll.html"

    def _already(self, request: AuthenticatedRequest) -> HttpResponse | None:
        if mfa.mfa_status(user=request.user).enrolled:
            messages.info(request, "Your authenticator app is already set up.")
            return HttpResponseRedirect(reverse("accounts:mfa_manage"))
        return None

    def _render(
        self,
        request: AuthenticatedRequest,
        provisioning: mfa.MfaProvisioning,
        form: MfaTotpCodeForm,
        status: int = 200,
        **extra: object,
    ) -> HttpResponse:
        secret = provisioning.secret_base32
        context = {
            "form": form,
            "qr_svg": _qr_svg(provisioning.uri),
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "required": mfa.mfa_status(user=request.user).required,
            "next": _next_url(request),
            **extra,
        }
        response = render(request, self.template_name, context, status=status)
        response["Cache-Control"] = "no-store"
        return response

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        already = self._already(request)
        if already is not None:
            return already
        # The secret stays the same for the whole attempt (sealed on the unconfirmed device):
        # a reload after scanning the QR code must not make the app's codes wrong.
        provisioning = mfa.mfa_enrollment_pending(user=request.user)
        if provisioning is None:
            provisioning = mfa.mfa_enrollment_begin(user=request.user)
        return self._render(request, provisioning, MfaTotpCodeForm())

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        already = self._already(request)
        if already is not None:
            return already
        if request.POST.get("restart"):
            # "Start again with a new secret": the old one stops working.
            mfa.mfa_enrollment_begin(user=request.user)
            messages.info(
                request, "A new secret was made: remove the old entry from your app and scan again."
            )
            return HttpResponseRedirect(_with_next(reverse("accounts:mfa_enroll"), request))
        provisioning = mfa.mfa_enrollment_pending(user=request.user)
        if provisioning is None:  # no enrollment in progress: start one
            return HttpResponseRedirect(_with_next(reverse("accounts:mfa_enroll"), request))
        lockout = throttle.mfa_lockout(user_id=request.user.pk)
        if lockout is not None:
            mfa.mfa_lockout_record(user=request.user, retry_after=lockout.retry_after)
            response = self._render(
                request,
                provisioning,
                MfaTotpCodeForm(),
                status=429,
                locked_minutes=max(1, lockout.retry_after // 60),
            )
            response["Retry-After"] = str(lockout.retry_after)
            return response
        form = MfaTotpCodeForm(request.POST)
        if not form.is_valid():
            return self._render(request, provisioning, form, status=400)
        try:
            codes = mfa.mfa_enrollment_confirm(user=request.user, code=form.cleaned_data["code"])
        except mfa.MfaCodeInvalid as exc:
            throttle.mfa_failure_count(user_id=request.user.pk)
            form.add_error("code", str(exc))
            return self._render(request, provisioning, form, status=400)
        except (mfa.MfaNotEnrolled, mfa.MfaAlreadyEnrolled) as exc:
            refusal_flash(request, exc)
            return HttpResponseRedirect(_with_next(reverse("accounts:mfa_enroll"), request))
        throttle.mfa_success_reset(user_id=request.user.pk)
        mfa.mfa_session_verified(request=request, user=request.user)
        return _recovery_codes_page(request, codes=codes, action="enrolled")


@method_decorator(sensitive_post_parameters("code"), name="dispatch")
@method_decorator(never_cache, name="dispatch")
class MfaManageView(SignedInMixin, View):
    """One's own two-factor status, and fresh recovery codes (with a current TOTP code)."""

    template_name = "accounts/mfa_manage.html"

    def _render(
        self,
        request: AuthenticatedRequest,
        form: MfaTotpCodeForm,
        status: int = 200,
        **extra: object,
    ) -> HttpResponse:
        context = {"status": mfa.mfa_status(user=request.user), "form": form, **extra}
        return render(request, self.template_name, context, status=status)

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return self._render(request, MfaTotpCodeForm())

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = MfaTotpCodeForm(request.POST)
        if not mfa.mfa_status(user=request.user).enrolled:
            form.is_valid()
            form.add_error(None, "Enrol an authenticator app first.")
            return self._render(request, form, status=400)
        locked = _throttled(
            request,
            self.template_name,
            {"status": mfa.mfa_status(user=request.user), "form": MfaTotpCodeForm()},
        )
        if locked is not None:
            return locked
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            codes = mfa.mfa_recovery_codes_regenerate(
                user=request.user, code=form.cleaned_data["code"]
            )
        except mfa.MfaCodeInvalid as exc:
            throttle.mfa_failure_count(user_id=request.user.pk)
            form.add_error("code", str(exc))
            return self._render(request, form, status=400)
        except mfa.MfaNotEnrolled as exc:
            refusal_on_form(form, exc)
            return self._render(request, form, status=400)
        throttle.mfa_success_reset(user_id=request.user.pk)
        return _recovery_codes_page(request, codes=codes, action="regenerated")


class UserMfaResetView(UserActionView):
    """An administrator removes another user's authenticator (lost phone): GET confirms."""

    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        return render(
            request,
            "accounts/mfa_reset.html",
            {"subject": subject, "subject_mfa": mfa.mfa_status(user=subject)},
        )

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        try:
            mfa.mfa_reset(actor=request.user, user=subject)
        except mfa.MfaPolicyError as exc:
            return self.refused(subject, exc)
        return self.done(
            subject,
            f"Two-factor sign-in of {subject.username} was reset; their sessions ended. "
            "They enrol a new authenticator app at their next sign-in.",
        )
