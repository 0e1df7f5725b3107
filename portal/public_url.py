"""Is `KMS_PUBLIC_URL` the address the portal is really reached at, and the one its
certificates name?

`KMS_PUBLIC_URL` is written into every certificate (CRL distribution point, AIA). Two ways it
goes wrong, both reported in the log and on administrators' dashboard:

- requests arrive under another host or port than `KMS_PUBLIC_URL` (the server was started
  on another address, `GUNICORN_BIND` without `KMS_PUBLIC_URL` behind a proxy, ...): logged
  once per process and host (`PublicUrlHostMiddleware`);
- the CA certificates or the key server's certificate name an older URL (the deployment
  moved): logged at start-up (`kmsportal.wsgi`); `manage.py reissue_public_urls` fixes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from pki.public_urls import StaleAddresses

logger = logging.getLogger("kmsportal.public_url")

REISSUE_HINT = "run `manage.py reissue_public_urls`"

_seen_lock = threading.Lock()
_hosts_warned: set[str] = set()


def public_netloc() -> str:
    """host[:port] of `KMS_PUBLIC_URL`, lower case, without the scheme's default port."""
    parts = urlsplit(settings.KMS_PUBLIC_URL)
    netloc = (parts.netloc or "").lower()
    default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    return netloc.removesuffix(default) if default else netloc


def request_netloc(request: HttpRequest) -> str | None:
    """host[:port] the request was addressed to, or None when the host is not allowed."""
    try:
        host = request.get_host().lower()
    except DisallowedHost:
        return None
    default = ":443" if request.is_secure() else ":80"
    return host.removesuffix(default)


def host_mismatch(request: HttpRequest) -> str | None:
    """A sentence for the administrator when this request's host is not the public URL's."""
    served = request_netloc(request)
    if served is None or served == public_netloc():
        return None
    return (
        f"This page was served as {request.scheme}://{served}/, but KMS_PUBLIC_URL is "
        f"{settings.KMS_PUBLIC_URL}: every certificate sends relying parties and clients "
        "there. Set KMS_PUBLIC_URL to the address clients use, restart, and "
        f"{REISSUE_HINT}."
    )


def server_certificate_stale() -> StaleAddresses | None:
    """The key server's newest certificate, if it names another address than the public URL."""
    from pki.public_urls import addresses_stale
    from vault.models import ServerIdentity

    identity = ServerIdentity.objects.select_related("certificate__ca").first()
    if identity is None:
        return None
    certificate = identity.certificate
    return addresses_stale(
        certificate_der=bytes(certificate.certificate_der),
        issuer_name=certificate.ca.name,
        what=f"key server certificate {certificate.serial_hex}",
    )


def stale_certificate_addresses() -> list[str]:
    """Sentences naming each CA or server certificate whose addresses are not the public
    URL's (parses a handful of CA certificates; no more)."""
    from pki.public_urls import certificate_authorities_with_stale_addresses

    try:
        problems = [problem for _, problem in certificate_authorities_with_stale_addresses()]
        server = server_certificate_stale()
    except DatabaseError:  # not migrated yet
        return []
    if server is not None:
        problems.append(server)
    return [
        f"The {p.what} names {', '.join(p.found) or 'no address'}, not {settings.KMS_PUBLIC_URL}: "
        f"{REISSUE_HINT}."
        for p in problems
    ]


def public_url_warnings(request: HttpRequest) -> list[str]:
    """Everything wrong with the public URL, for the administrators' dashboard."""
    mismatch = host_mismatch(request)
    return ([mismatch] if mismatch else []) + stale_certificate_addresses()


def log_startup_warnings() -> None:
    if settings.KMS_TRIAL_SETTINGS_FILE is not None:
        logger.warning(
            "serving with the trial settings of %s (a development keyring and secret, plain "
            "HTTP cookies): for a local trial only; a deployment sets its environment instead",
            settings.KMS_TRIAL_SETTINGS_FILE,
        )
    for message in stale_certificate_addresses():
        logger.warning("%s", message)


class PublicUrlHostMiddleware:
    """Log (once per process and host) requests addressed to another host than the public
    URL: the first sign of certificates that send clients to the wrong place."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        served = request_netloc(request)
        if served is not None and served not in _hosts_warned and served != public_netloc():
            with _seen_lock:
                first = served not in _hosts_warned
                _hosts_warned.add(served)
            if first:
                logger.warning(
                    "requests arrive as %s://%s/ but KMS_PUBLIC_URL is %s; certificates name "
                    "the latter (set KMS_PUBLIC_URL and %s)",
                    request.scheme,
                    served,
                    settings.KMS_PUBLIC_URL,
                    REISSUE_HINT,
                )
        return self.get_response(request)
