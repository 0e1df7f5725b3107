from django.urls import path

from . import dashboard

app_name = "portal"

urlpatterns = [
    path("", dashboard.DashboardView.as_view(), name="dashboard"),
]
