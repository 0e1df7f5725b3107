"""View mixins every app's portal pages share.

They sit here, beside the project's other shared web helpers (widgets, labels), and import
Django only, so that audit, accounts, vault and pki views can use them without importing
one another or the portal shell above them."""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse


class PortalPermissionMixin(LoginRequiredMixin, PermissionRequiredMixin):
    """Every portal page: anonymous users go to sign-in, signed-in users without the
    permission get 403 (never a redirect loop to the sign-in page)."""

    def handle_no_permission(self) -> HttpResponse:
        if self.request.user.is_authenticated:
            raise PermissionDenied(self.get_permission_denied_message())
        return super().handle_no_permission()
