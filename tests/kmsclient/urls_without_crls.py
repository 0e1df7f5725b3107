"""The portal's URLs with its CRL distribution points gone (404): a relying party that finds
no CRL must fall back to the OCSP responder."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import re_path

from kmsportal.urls import urlpatterns as portal_urlpatterns


def no_crl(request: HttpRequest) -> HttpResponse:
    return HttpResponseNotFound(b"no CRL here", content_type="text/plain")


urlpatterns = [re_path(r"^pki/crl/", no_crl), *portal_urlpatterns]
