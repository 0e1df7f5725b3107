from django.urls import path

from . import approval_views as views

app_name = "approvals"

urlpatterns = [
    path("", views.ApprovalInboxView.as_view(), name="inbox"),
    path("<slug:slug>/<int:pk>/", views.ApprovalConfirmView.as_view(), name="confirm"),
]
