from django.urls import path

from . import client_views as views

app_name = "clients"

urlpatterns = [
    path("", views.ClientListView.as_view(), name="list"),
    path("new/", views.ClientCreateView.as_view(), name="create"),
    path("<str:name>/", views.ClientDetailView.as_view(), name="detail"),
    path("<str:name>/grants/", views.GrantCreateView.as_view(), name="grant_create"),
    path(
        "<str:name>/grants/<int:pk>/withdraw/",
        views.GrantWithdrawView.as_view(),
        name="grant_withdraw",
    ),
    path("<str:name>/enrollment-token/", views.ClientTokenView.as_view(), name="enrollment_token"),
    path("<str:name>/<str:action>/", views.ClientActionView.as_view(), name="action"),
]
