from django.urls import path

from . import views

app_name = "vault"

# "new", "approvals" and "import" are reserved key names (vault.services.RESERVED_KEY_NAMES).
urlpatterns = [
    path("", views.KeyListView.as_view(), name="key_list"),
    path("new/", views.KeyCreateView.as_view(), name="key_create"),
    path("approvals/", views.ApprovalInboxView.as_view(), name="approvals"),
    path("import/", views.KeyImportParametersView.as_view(), name="key_import_parameters"),
    path("import/upload/", views.KeyImportView.as_view(), name="key_import"),
    path(
        "approvals/<int:pk>/<str:decision>/",
        views.ApprovalDecisionView.as_view(),
        name="approval_decision",
    ),
    path("<str:name>/", views.KeyDetailView.as_view(), name="key_detail"),
    path("<str:name>/<str:slug>/", views.KeyActionView.as_view(), name="key_action"),
]
