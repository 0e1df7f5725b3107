"""Top-level URL configuration."""

from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("audit/", include("audit.urls")),
    path("keys/", include("vault.urls")),
]
