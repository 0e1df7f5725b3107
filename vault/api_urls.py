from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("enroll", api.EnrollView.as_view(), name="enroll"),
    path("keys/fetch", api.KeyFetchView.as_view(), name="key_fetch"),
    # Anything else under /api/v1/ answers a problem document, never an HTML page.
    path("", api.NotFoundView.as_view(), name="index"),
    path("<path:rest>", api.NotFoundView.as_view(), name="not_found"),
]
