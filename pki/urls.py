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
    path("cas/<slug:name>/crl/", views.CRLHealthView.as_view(), name="crl_health"),
    path("cas/<slug:name>/crl/publish/", views.CRLPublishView.as_view(), name="crl_publish"),
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
    # Public (no sign-in): the CRL distribution point written into every certificate.
    # Delta CRLs first: "<ca>-delta.crl" would otherwise match "<slug>.crl".
    path(
        "crl/<slug:name>-delta.crl",
        views.CRLView.as_view(),
        {"encoding": "der", "delta": True},
        name="delta_crl_der",
    ),
    path(
        "crl/<slug:name>-delta.pem",
        views.CRLView.as_view(),
        {"encoding": "pem", "delta": True},
        name="delta_crl_pem",
    ),
    path("crl/<slug:name>.crl", views.CRLView.as_view(), {"encoding": "der"}, name="crl_der"),
    path("crl/<slug:name>.pem", views.CRLView.as_view(), {"encoding": "pem"}, name="crl_pem"),
    # Public: the OCSP responder (AIA OCSP). POST to the bare URL; GET with the request in
    # the path (RFC 6960 A.1; base64 may contain "/", hence the path converter).
    path("ocsp/<slug:name>", views.OCSPView.as_view(), name="ocsp"),
    path("ocsp/<slug:name>/", views.OCSPView.as_view(), name="ocsp_slash"),
    path("ocsp/<slug:name>/<path:encoded>", views.OCSPView.as_view(), name="ocsp_get"),
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
    path(
        "certificates/<int:pk>/revoke/",
        views.CertificateRevokeView.as_view(),
        name="certificate_revoke",
    ),
    path(
        "certificates/<int:pk>/release/",
        views.CertificateReleaseView.as_view(),
        name="certificate_release",
    ),
    # Two-person rule for revoking a CA (pki.approvals).
    path(
        "revocations/",
        views.CARevocationApprovalsView.as_view(),
        name="ca_revocation_approvals",
    ),
    path(
        "revocations/<int:pk>/<str:decision>/",
        views.CARevocationDecisionView.as_view(),
        name="ca_revocation_decision",
    ),
    path("issue/", views.IssueFromCSRView.as_view(), name="issue_csr"),
    path("issue/generated/", views.IssueGeneratedView.as_view(), name="issue_generated"),
    path(
        "issue/generated/<uuid:delivery_id>/",
        views.IssueGeneratedResultView.as_view(),
        name="issue_generated_result",
    ),
    path("validate/", views.ValidateView.as_view(), name="validate"),
]
