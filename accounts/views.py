"""Portal pages for signing in and managing users. Views parse, check, call one service."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, SetPasswordForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import urlencode
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import ListView

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.one_time import one_time_secret_keep, one_time_secret_take
from kmsportal.views_errors import KMSError, refusal_flash, refusal_on_form

from . import invitations, mfa, selectors, services, signin, throttle
from .forms import UserCreateForm, UserRolesForm
from .models import AccountSetup, AdministratorRemovalRequest, Invitation, RoleGrantRequest
from .roles import Role, user_roles


@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's sign-in form; success and failure are both audited."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def _attempt(self) -> tuple[str, str]:
        """The username as authentication reads it (stripped, NFKC) and the address."""
        return (
            throttle.username_normalise((self.request.POST.get("username") or "")[:300])[:150],
            self.request.META.get("REMOTE_ADDR", ""),
        )

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        username, address = self._attempt()
        # Counted before the password is looked at (accounts.throttle).
        lockout = throttle.sign_in_attempt_begin(username=username, address=address)
        if lockout is not None:
            # Refused before the password is even looked at; the same words whether or not
            # the username exists.
            signin.user_sign_in_locked(username=username, scope=lockout.scope)
            # An unbound form: binding it would run authenticate() on the password.
            form = self.get_form_class()(request, initial={"username": username})
            minutes = max(1, lockout.retry_after // 60)
            response = self.render_to_response(
                self.get_context_data(form=form, locked_minutes=minutes), status=429
            )
            response["Retry-After"] = str(lockout.retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        username, address = self._attempt()
        mfa_pending = signin.user_sign_in(request=self.request, user=form.get_user())
        throttle.sign_in_success_reset(username=username, address=address)
        if mfa_pending:
            # The password is only the first step: the second factor (or, for a user who
            # must have one and has none yet, enrollment) takes the session on to `next`.
            enroll = mfa.mfa_session_state(self.request) is mfa.MfaSessionState.PENDING_ENROLL
            page = reverse("accounts:mfa_enroll" if enroll else "accounts:mfa_verify")
            return HttpResponseRedirect(f"{page}?{urlencode({'next': self.get_success_url()})}")
        return HttpResponseRedirect(self.get_success_url())

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        username, address = self._attempt()
        if username:
            signin.user_sign_in_failed(username=username)
        throttle.sign_in_failure_count(username=username, address=address)
        return super().form_invalid(form)


class LogoutView(View):
    """POST only (a link or an image cannot sign anyone out)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        signin.user_sign_out(request=request)
        return HttpResponseRedirect(reverse("accounts:login"))


@method_decorator(sensitive_post_parameters(), name="dispatch")
class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        signin.user_password_change(
            request=self.request, user=form.user, password=form.cleaned_data["new_password1"]
        )
        messages.success(self.request, "Your password was changed; other sessions were ended.")
        return HttpResponseRedirect(resolve_url(settings.LOGIN_REDIRECT_URL))


class UserListView(PortalPermissionMixin, ListView):  # type: ignore[type-arg]  # not subscriptable at run time
    request: AuthenticatedRequest  # TemplateResponseMixin declares it too
    permission_required = "auth.view_user"
    template_name = "accounts/user_list.html"
    context_object_name = "users"
    paginate_by = 50

    def get_queryset(self) -> QuerySet[User]:
        return selectors.user_list(
            user=self.request.user,
            search=self.request.GET.get("q", ""),
            status=self.request.GET.get("status", ""),
            role=self.request.GET.get("role", ""),
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["roles"] = Role.choices
        return context


def _invitation_purpose(subject: User) -> str:
    return f"auth.User:{subject.pk}:invitation-link"


def _invitation_page(
    request: HttpRequest, *, subject: User, token: str, action: str
) -> HttpResponse:
    """Post/Redirect/Get to the page that shows the invitation link once: the token waits in
    the session (sealed, kmsportal.one_time) for that one GET, so a reload neither posts the
    form again nor shows the link a second time; only the token's hash is stored."""
    one_time_secret_keep(request, purpose=_invitation_purpose(subject), secret=token)
    url = reverse("accounts:user_invitation", args=[subject.pk])
    return HttpResponseRedirect(f"{url}?{urlencode({'action': action})}")


@method_decorator(never_cache, name="dispatch")
class UserInvitationView(PortalPermissionMixin, View):
    """The invitation link just made for a new user or a password reset, shown once;
    afterwards (a reload, a bookmark) how to get a new link."""

    # Both creating a user and resetting a password lead here; a new link needs the latter.
    permission_required = "auth.change_user"

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = get_object_or_404(User, pk=pk)
        token = one_time_secret_take(request, purpose=_invitation_purpose(subject))
        action = "created" if request.GET.get("action") == "created" else "reset"
        response = render(
            request,
            "accounts/invitation_once.html",
            {
                "subject": subject,
                "link": invitations.invitation_url(token) if token else None,
                "action": action,
                "role_request": RoleGrantRequest.objects.filter(
                    user=subject, status="pending"
                ).first()
                if token and action == "created"
                else None,
                "expires_hours": settings.KMS_INVITATION_SECONDS // 3600,
            },
            status=200 if token else 410,
        )
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(never_cache, name="dispatch")
class UserCreateView(PortalPermissionMixin, View):
    permission_required = "auth.add_user"
    template_name = "accounts/user_create.html"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": UserCreateForm()})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = UserCreateForm(request.POST)
        if form.is_valid():
            try:
                created = services.user_create(
                    actor=request.user,
                    username=form.cleaned_data["username"],
                    email=form.cleaned_data["email"],
                    roles=form.cleaned_data["roles"],
                    reason=form.cleaned_data["reason"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return _invitation_page(
                    request,
                    subject=created.user,
                    token=created.invitation_token,
                    action="created",
                )
        return render(request, self.template_name, {"form": form}, status=400)


class UserDetailView(PortalPermissionMixin, View):
    permission_required = "auth.view_user"
    template_name = "accounts/user_detail.html"

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = get_object_or_404(User, pk=pk)
        return render(request, self.template_name, self._context(subject))

    def _context(self, subject: User, **forms: object) -> dict[str, object]:
        roles = user_roles(subject)
        return {
            "subject": subject,
            "subject_roles": roles,
            "roles_form": forms.get("roles_form") or UserRolesForm(initial={"roles": roles}),
            "is_self": subject.pk == self.request.user.pk,
            "subject_mfa": mfa.mfa_status(user=subject),
            "subject_setup": AccountSetup.objects.filter(user=subject).first(),
            "role_requests": RoleGrantRequest.objects.filter(user=subject, status="pending"),
            "removal_requests": AdministratorRemovalRequest.objects.filter(
                user=subject, status="pending"
            ),
        }


class UserActionView(PortalPermissionMixin, View):
    """Base for POST-only actions on one user, which need `auth.change_user`."""

    permission_required = "auth.change_user"
    http_method_names = ["post"]

    def subject(self, pk: int) -> User:
        return get_object_or_404(User, pk=pk)

    def done(self, subject: User, message: str) -> HttpResponse:
        messages.success(self.request, message)
        return HttpResponseRedirect(reverse("accounts:user_detail", args=[subject.pk]))

    def refused(self, subject: User, exc: KMSError) -> HttpResponse:
        refusal_flash(self.request, exc)
        return HttpResponseRedirect(reverse("accounts:user_detail", args=[subject.pk]))


class UserRolesView(UserActionView):
    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        form = UserRolesForm(request.POST)
        if not form.is_valid():
            return self.refused(subject, KMSError("Choose at least one valid role."))
        try:
            changed = services.user_roles_set(
                actor=request.user,
                user=subject,
                roles=form.cleaned_data["roles"],
                reason=form.cleaned_data["reason"],
            )
        except KMSError as exc:
            return self.refused(subject, exc)
        labels = ", ".join(r.label for r in user_roles(subject)) or "none"
        message = f"Roles of {subject.username} are now: {labels}."
        if changed.request is not None:
            waiting = ", ".join(Role(r).label for r in changed.request.roles)
            message += (
                f" {waiting} waits for a second administrator's approval (Approvals): with two "
                "or more administrators no one grants a role alone."
            )
        if changed.removal_request is not None:
            message += (
                " Removing the administrator role waits for a second administrator's approval "
                "(Approvals): with two or more administrators no one demotes another alone."
            )
        return self.done(subject, message)


class UserDeactivateView(UserActionView):
    """GET shows a confirmation page; POST deactivates."""

    http_method_names = ["get", "post"]

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        return render(request, "accounts/user_deactivate.html", {"subject": self.subject(pk)})

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        try:
            waiting = services.user_deactivate(
                actor=request.user, user=subject, reason=request.POST.get("reason", "")
            )
        except KMSError as exc:
            return self.refused(subject, exc)
        if waiting is not None:
            return self.done(
                subject,
                f"Deactivating {subject.username} waits for a second administrator's approval "
                "(Approvals): with two or more administrators no one deactivates another alone.",
            )
        return self.done(subject, f"{subject.username} was deactivated and can no longer sign in.")


class UserReactivateView(UserActionView):
    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        try:
            services.user_reactivate(actor=request.user, user=subject)
        except KMSError as exc:
            return self.refused(subject, exc)
        return self.done(subject, f"{subject.username} can sign in again.")


@method_decorator(never_cache, name="dispatch")
class UserPasswordResetView(UserActionView):
    """GET: what a reset does. POST: end the password and hand over a new invitation link."""

    http_method_names = ["get", "post"]
    template_name = "accounts/user_password_reset.html"

    def get(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        return render(request, self.template_name, {"subject": self.subject(pk)})

    def post(self, request: AuthenticatedRequest, pk: int) -> HttpResponse:
        subject = self.subject(pk)
        try:
            token = services.user_password_reset(actor=request.user, user=subject)
        except KMSError as exc:
            return self.refused(subject, exc)
        return _invitation_page(request, subject=subject, token=token, action="reset")


@method_decorator(sensitive_post_parameters("new_password1", "new_password2"), name="dispatch")
@method_decorator(never_cache, name="dispatch")
class InvitationView(View):
    """The invitation link: the person sets their own password (no sign-in needed; the
    token in the link's query string is the credential, once)."""

    template_name = "registration/invitation.html"

    def _invitation(self, token: str) -> Invitation | None:
        try:
            return invitations.invitation_get(token=token)
        except invitations.InvitationInvalid:
            return None

    def _render(
        self, invitation: Invitation | None, form: object, status: int = 200
    ) -> HttpResponse:
        response = render(
            self.request,
            self.template_name,
            {"invitation": invitation, "form": form},
            status=status if invitation else 404,
        )
        response["Cache-Control"] = "no-store"
        return response

    def get(self, request: HttpRequest) -> HttpResponse:
        token = request.GET.get("token", "")
        invitation = self._invitation(token)
        form = SetPasswordForm(invitation.user) if invitation else None
        return self._render(invitation, form)

    def post(self, request: HttpRequest) -> HttpResponse:
        token = request.GET.get("token", "")  # the form posts back to the link itself
        invitation = self._invitation(token)
        if invitation is None:
            return self._render(None, None)
        form = SetPasswordForm(invitation.user, request.POST)
        if form.is_valid():
            try:
                user = invitations.invitation_accept(
                    token=token, password=form.cleaned_data["new_password1"]
                )
            except invitations.InvitationInvalid:
                return self._render(None, None)
            except ValidationError as exc:
                form.add_error("new_password1", exc)
            else:
                messages.success(
                    request,
                    f"Your password is set, {user.username}. Sign in with it now"
                    + (
                        "; you will set up your authenticator app next."
                        if mfa.mfa_required_for(user)
                        else "."
                    ),
                )
                return HttpResponseRedirect(reverse("accounts:login"))
        return self._render(invitation, form, status=400)
