from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("enroll", api.EnrollView.as_view(), name="enroll"),
    path("keys/fetch", api.KeyFetchView.as_view(), name="key_fetch"),
]
