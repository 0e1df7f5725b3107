from django.urls import path

from . import views

app_name = "api_tokens"

urlpatterns = [
    path("", views.TokenListView.as_view(), name="list"),
    path("<int:pk>/created/", views.TokenCreatedView.as_view(), name="created"),
    path("revoke/", views.TokenRevokeView.as_view(), name="revoke"),
]
