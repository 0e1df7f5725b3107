"""View mixins every app's portal pages share.

They sit here, beside the project's other shared web helpers (widgets, labels), and import
Django only, so that audit, accounts, vault and pki views can use them without importing
one another or the portal shell above them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.views import View

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class AuthenticatedRequest(HttpRequest):
    """For the type checker: a request that passed sign-in, so its user is a `User` (never
    `AnonymousUser`). At run time requests are plain `HttpRequest` objects."""

    user: User


# Both mixins name View last among their bases, so that in a page's method resolution order
# the sign-in and permission checks (their dispatch) come before View.dispatch; declaring
# ``request`` on a View subclass is what lets the type checker accept the narrower type.


class SignedInMixin(LoginRequiredMixin, View):
    """`LoginRequiredMixin` whose ``self.request`` the type checker knows is signed in."""

    request: AuthenticatedRequest


class PortalPermissionMixin(LoginRequiredMixin, PermissionRequiredMixin, View):
    """Every portal page: anonymous users go to sign-in, signed-in users without the
    permission get 403 (never a redirect loop to the sign-in page)."""

    request: AuthenticatedRequest

    def handle_no_permission(self) -> HttpResponseRedirect:
        if self.request.user.is_authenticated:
            raise PermissionDenied(self.get_permission_denied_message())
        return super().handle_no_permission()
