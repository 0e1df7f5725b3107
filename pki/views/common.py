"""What the PKI pages share: permissions, media types, HTTP cache lifetimes, lookups that
answer 404, downloads and carried form fields."""

from __future__ import annotations

from typing import TypeVar

from django import forms
from django.http import Http404, HttpResponse

from kmsportal.mixins import AuthenticatedRequest

from .. import selectors
from ..models import Certificate, CertificateAuthority

VIEW_CA = selectors.VIEW_CA
VIEW_CERTIFICATE = selectors.VIEW_CERTIFICATE
MANAGE_CA = "pki.manage_certificateauthority"
ISSUE = "pki.issue_certificate"
REVOKE = selectors.REVOKE
VIEW_CA_REVOCATION_REQUEST = selectors.VIEW_CA_REVOCATION_REQUEST
PUBLISH_CRL = "pki.publish_crl"

PEM_TYPE = "application/x-pem-file"
DER_CERTIFICATE_TYPE = "application/pkix-cert"
PKCS12_TYPE = "application/x-pkcs12"
DER_CRL_TYPE = "application/pkix-crl"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"

#: HTTP caches may keep a CRL this long at most (and never past its nextUpdate): a
#: revocation reaches relying parties that revalidate within minutes, and revalidation with
#: the ETag costs a 304 without a body.
CRL_HTTP_MAX_AGE = 300
#: A CA certificate does not change; caches may keep it a day (never past its notAfter).
CA_CERTIFICATE_HTTP_MAX_AGE = 86400
#: Responses to OCSP GET requests without a nonce (RFC 5019 style) may be cached this long.
OCSP_HTTP_MAX_AGE = 300


def ca_or_404(request: AuthenticatedRequest, name: str) -> CertificateAuthority:
    ca = selectors.ca_get(user=request.user, name=name)
    if ca is None:
        raise Http404("No such certificate authority.")
    return ca


def certificate_or_404(request: AuthenticatedRequest, pk: int) -> Certificate:
    certificate = selectors.certificate_get(user=request.user, pk=pk)
    if certificate is None:
        raise Http404("No such certificate.")
    return certificate


def download(content: bytes | str, *, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


FormT = TypeVar("FormT", bound=forms.Form)


def hide(form: FormT, *names: str) -> FormT:
    """Carry these fields to the next step unchanged: hidden inputs (checked again there)."""
    for name in names:
        form.fields[name].widget = forms.HiddenInput()
    return form
