"""Every answer of the admin API that is not a success is an RFC 9457 problem document.

The handlers are installed on the one ``NinjaAPI`` by :func:`install` (adminapi.api). Routers
do not catch errors to render them: they raise, and this module maps, in one place:

- :class:`~kmsportal.crypto.errors.KMSError`, the root of every domain error (VaultError,
  TwoPersonError, InvalidTransition, PkiError, ...): its own ``code`` and ``status``;
- request validation (pydantic, path and query parameters): 422 ``validation_failed`` with the
  field errors in the ``errors`` extension member (``loc``, ``msg``, ``type``);
- no or an invalid token: 401 ``unauthenticated`` with ``WWW-Authenticate: Bearer``;
- ``Http404`` and ``ObjectDoesNotExist``: 404 ``not_found``; ``PermissionDenied``: 403;
- anything else: 500 ``internal_error``, logged with its traceback, never shown.

A router raises ``KMSError(message, code=..., status=...)`` for a refusal of its own (for
example ``not_found`` for an unknown key name); the message is for the person who caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

from audit.middleware import audit_denied_reason_set
from kmsportal.crypto.errors import KMSError
from kmsportal.errors import problem_for, problem_response

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger("kmsportal.adminapi")


def problem(code: str, detail: str, status: int, **extra: Any) -> HttpResponse:
    return problem_response(code, detail, status, **extra)


def _kms_error(request: HttpRequest, exc: KMSError) -> HttpResponse:
    if exc.status == 403 and not getattr(request, "audit_denied_reason", None):
        # audit.middleware records the 403 as access.denied, with this reason
        audit_denied_reason_set(request, exc.message[:200])
    if exc.status >= 500:
        logger.error("admin API %s %s: %s", request.method, request.path, exc.code)
    return problem_for(exc)


def _validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors
    ]
    fields = ", ".join(".".join(e["loc"][1:] or e["loc"]) for e in errors[:5])
    return problem(
        "validation_failed",
        f"the request is not valid: check {fields or 'its fields'}",
        422,
        errors=errors,
    )


def _django_validation(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    return problem("validation_failed", "; ".join(exc.messages)[:1000], 422)


def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = problem(
        "unauthenticated",
        "send a live personal API token: Authorization: Bearer kms_... (docs/admin-api.md)",
        401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="kmsportal admin API"'
    return response


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    codes = {400: "bad_request", 403: "forbidden", 404: "not_found", 429: "too_many_requests"}
    return problem(codes.get(exc.status_code, "refused"), str(exc), exc.status_code)


def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return problem(
        "not_found", str(exc) if isinstance(exc, Http404) and str(exc) else "no such object", 404
    )


def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    audit_denied_reason_set(request, str(exc)[:200] or "permission denied")
    return problem("permission_denied", str(exc) or "permission denied", 403)


def _internal(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("admin API %s %s failed", request.method, request.path)
    return problem(
        "internal_error",
        "the server failed to answer this request; it was logged (see X-Request-ID)",
        500,
    )


_E = TypeVar("_E", bound=Exception)


def _handle(
    api: NinjaAPI, exc_class: type[_E], handler: Callable[[HttpRequest, _E], HttpResponse]
) -> None:
    # ninja's annotation says a handler may be given the exception or its class (ExcHandler),
    # but it only ever passes the instance its operation caught (NinjaAPI.on_exception).
    api.add_exception_handler(exc_class, handler)  # type: ignore[arg-type]


def install(api: NinjaAPI) -> None:
    """Put this module's handlers on ``api`` (ninja picks the most specific class)."""
    _handle(api, Exception, _internal)
    _handle(api, KMSError, _kms_error)
    _handle(api, ValidationError, _validation)
    _handle(api, DjangoValidationError, _django_validation)
    _handle(api, AuthenticationError, _unauthenticated)
    _handle(api, HttpError, _http_error)
    _handle(api, Http404, _not_found)
    _handle(api, ObjectDoesNotExist, _not_found)
    _handle(api, PermissionDenied, _forbidden)
