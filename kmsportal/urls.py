"""Top-level URL configuration."""

from django.urls import include, path

from adminapi.api import urlpatterns as admin_api_urlpatterns
from kmsportal.health import healthz, readyz

urlpatterns = [
    path("", include("portal.urls")),
    path("", include("accounts.urls")),
    path("approvals/", include("accounts.approval_urls")),
    path("audit/", include("audit.urls")),
    path("keys/", include("vault.urls")),
    path("clients/", include("vault.client_urls")),
    path("accounts/api-tokens/", include("adminapi.urls")),
    # The admin REST API first: vault.api_urls ends with a catch-all problem-document 404.
    path("api/v1/", include((admin_api_urlpatterns(), "adminapi"))),
    path("api/v1/", include("vault.api_urls")),
    path("pki/", include("pki.urls")),
    path("notifications/", include("notifications.urls")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
