from django.urls import path

from . import views

app_name = "pki"

# "new" is a reserved CA name (see pki.services.RESERVED_CA_NAMES).
urlpatterns = [
    path("", views.CAListView.as_view(), name="ca_list"),
    path("cas/new/", views.CACreateView.as_view(), name="ca_create"),
    path("cas/<slug:name>/", views.CADetailView.as_view(), name="ca_detail"),
    path("cas/<slug:name>/disable/", views.CADisableView.as_view(), name="ca_disable"),
    path("cas/<slug:name>/chain.pem", views.CAChainView.as_view(), name="ca_chain"),
    # Public (no sign-in): the AIA caIssuers URL written into every certificate.
    path(
        "ca/<slug:name>.crt",
        views.CACertificateView.as_view(),
        {"encoding": "der"},
        name="ca_certificate_der",
    ),
    path(
        "ca/<slug:name>.pem",
        views.CACertificateView.as_view(),
        {"encoding": "pem"},
        name="ca_certificate_pem",
    ),
    path("certificates/", views.CertificateListView.as_view(), name="certificate_list"),
    path(
        "certificates/<int:pk>/",
        views.CertificateDetailView.as_view(),
        name="certificate_detail",
    ),
    path(
        "certificates/<int:pk>/download/<str:encoding>/",
        views.CertificateDownloadView.as_view(),
        name="certificate_download",
    ),
    path("issue/", views.IssueFromCSRView.as_view(), name="issue_csr"),
    path("issue/generated/", views.IssueGeneratedView.as_view(), name="issue_generated"),
    path("validate/", views.ValidateView.as_view(), name="validate"),
]
