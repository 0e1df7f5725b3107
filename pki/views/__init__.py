"""PKI pages: CAs, certificates, issuance behind a confirmation page, validation,
revocation behind a confirmation page, the CRL health page; and the public views relying
parties use without signing in: CA certificate (the AIA caIssuers URL), CRL (the CRL
distribution point) and OCSP.

Views parse input, check permissions (on every request, GET and POST), call one service or
selector and render. Domain errors become form errors with status 400. Private keys never
reach a view, except the generated one inside the encrypted PKCS#12 it returns once.

The public views are marked `login_not_required` (exempt from Django's LoginRequiredMiddleware
should it ever be enabled), work over plain HTTP and with DEBUG off, and serve stored bytes
with ETag, Last-Modified, Expires and Cache-Control (bounded by the CRL's nextUpdate or the
certificate's notAfter); conditional GET and HEAD answer 304 without a body. OCSP is
CSRF-exempt: its clients are not browsers and its POST body is a signed-for request, not a
form.
"""

from .cas import CAChainView, CACreateView, CADetailView, CADisableView, CAListView
from .certificates import CertificateDetailView, CertificateDownloadView, CertificateListView
from .common import (
    CA_CERTIFICATE_HTTP_MAX_AGE,
    CRL_HTTP_MAX_AGE,
    DER_CERTIFICATE_TYPE,
    DER_CRL_TYPE,
    ISSUE,
    MANAGE_CA,
    OCSP_HTTP_MAX_AGE,
    OCSP_REQUEST_TYPE,
    OCSP_RESPONSE_TYPE,
    PEM_TYPE,
    PKCS12_TYPE,
    PUBLISH_CRL,
    REVOKE,
    VIEW_CA,
    VIEW_CA_REVOCATION_REQUEST,
    VIEW_CERTIFICATE,
)
from .crls import CRLHealthView, CRLPublishView
from .issuance import IssueFromCSRView, IssueGeneratedResultView, IssueGeneratedView
from .public import CACertificateView, CRLView, OCSPView
from .revocation import (
    CARevocationApprovalsView,
    CARevocationDecisionView,
    CertificateReleaseView,
    CertificateRevokeView,
)
from .validation import ValidateView

__all__ = [
    "CA_CERTIFICATE_HTTP_MAX_AGE",
    "CRL_HTTP_MAX_AGE",
    "DER_CERTIFICATE_TYPE",
    "DER_CRL_TYPE",
    "ISSUE",
    "MANAGE_CA",
    "OCSP_HTTP_MAX_AGE",
    "OCSP_REQUEST_TYPE",
    "OCSP_RESPONSE_TYPE",
    "PEM_TYPE",
    "PKCS12_TYPE",
    "PUBLISH_CRL",
    "REVOKE",
    "VIEW_CA",
    "VIEW_CA_REVOCATION_REQUEST",
    "VIEW_CERTIFICATE",
    "CACertificateView",
    "CAChainView",
    "CACreateView",
    "CADetailView",
    "CADisableView",
    "CAListView",
    "CARevocationApprovalsView",
    "CARevocationDecisionView",
    "CRLHealthView",
    "CRLPublishView",
    "CRLView",
    "CertificateDetailView",
    "CertificateDownloadView",
    "CertificateListView",
    "CertificateReleaseView",
    "CertificateRevokeView",
    "IssueFromCSRView",
    "IssueGeneratedResultView",
    "IssueGeneratedView",
    "OCSPView",
    "ValidateView",
]
