"""The admin REST API: one NinjaAPI, mounted at /api/v1/ (kmsportal/urls.py).

Conventions for every router (adminapi/routers/<area>.py):

- ``router = Router(tags=["<Area>"])``, added below with ``api.add_router("/admin/<area>", ...)``;
  paths live under /api/v1/admin/;
- every operation is authenticated by the API-wide :class:`~adminapi.auth.ApiTokenAuth` and
  calls :func:`adminapi.auth.require` first; its rule is declared in the module's ``RULES``
  (adminapi.permissions). Its operationId is the view function's name (unique);
- reads are GET; anything that may change state is POST (or DELETE), calls exactly one
  existing service (the portal's), and returns what the portal page would show;
- errors are raised, not rendered: adminapi.errors turns them into RFC 9457 problem documents.
  Every operation's OpenAPI entry gets the problem responses added here, so routers declare
  only their success responses;
- a secret made by an operation (an enrollment token, an invitation link) is in that one
  response only (``Cache-Control: no-store``, see :func:`no_store`).

/api/v1/openapi.json (OpenAPI 3.1, generated) is public: it describes, it grants nothing.
/api/v1/docs (Swagger UI, served from ninja's bundled static files: no CDN) is for signed-in
portal users whose session passed the second factor.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, URLResolver, reverse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Swagger
from ninja.openapi.schema import OpenAPISchema
from ninja.operation import Operation

from . import errors
from .auth import ApiTokenAuth
from .routers import accounts, approvals, audit, certificates, clients, keys, pki, tokens

DESCRIPTION = """\
Everything the portal lets a signed-in role do, as calls under `/api/v1/admin/`, with the same
services, permission checks and two-person rules. Authenticate with a personal API token made
on the portal's *API tokens* page: `Authorization: Bearer kms_...`. Every error is an RFC 9457
problem document (`application/problem+json`). See docs/admin-api.md.
"""

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; `code` is the stable machine-readable part.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_failed only: one entry per invalid field",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
}
PROBLEM_RESPONSES = {
    "401": "No live personal API token (missing, unknown, expired or revoked)",
    "403": "The token's scope or its user's roles do not allow this",
    "404": "No such object",
    "409": "The object's state or a two-person rule refuses this now",
    "422": "The request is not valid; `errors` says which fields",
    "default": "Any other refusal or failure, as a problem document",
}


class AdminApi(NinjaAPI):
    """NinjaAPI whose OpenAPI document says that every error is a problem document."""

    def get_openapi_operation_id(self, operation: Operation) -> str:
        return operation.view_func.__name__

    @functools.cache  # noqa: B019 (one API object per process; the schema never changes)
    def _schema(self, path_prefix: str) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for status, description in PROBLEM_RESPONSES.items():
                    responses.setdefault(status, {"description": description, "content": problem})
        return schema

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        if path_prefix is None:
            path_prefix = reverse(f"{self.urls_namespace}:openapi-json").rsplit("openapi.json", 1)[
                0
            ]
        return self._schema(path_prefix)


api = AdminApi(
    title="kmsportal admin API",
    version="1",
    description=DESCRIPTION,
    auth=ApiTokenAuth(),
    urls_namespace="adminapi",
    docs=Swagger(settings={"persistAuthorization": False, "tryItOutEnabled": False}),
)
errors.install(api)
api.add_router("/admin/tokens", tokens.router)
api.add_router("/admin/keys", keys.router)
api.add_router("/admin/clients", clients.router)
api.add_router("/admin/approvals", approvals.router)
api.add_router("/admin/accounts", accounts.router)
api.add_router("/admin/pki", pki.router)
api.add_router("/admin/pki", certificates.router)
api.add_router("/admin/audit", audit.router)


def no_store(response: HttpResponse) -> HttpResponse:
    """A response carrying a one-time secret is never cached."""
    response["Cache-Control"] = "no-store"
    return response


_NUL_ESCAPE = re.compile(rb"\\u0000", re.IGNORECASE)


def _has_nul(request: HttpRequest) -> bool:
    """A NUL character anywhere in the input: the portal's forms refuse it (Django's
    ProhibitNullCharactersValidator), and PostgreSQL cannot store it in text."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.GET.items()):
        return True
    body = request.body if request.method not in ("GET", "HEAD") else b""
    return b"\x00" in body or bool(_NUL_ESCAPE.search(body))


def _api_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Every API view: NUL characters refused (422), and the plain-text 405 ninja answers for
    a method the path does not take turned into a problem document."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            nul = _has_nul(request)
        except RequestDataTooBig:
            return errors.problem(
                "request_too_large",
                f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes",
                413,
            )
        if nul:
            return errors.problem(
                "validation_failed", "NUL characters are not accepted in any field", 422
            )
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and "problem" not in response.get("Content-Type", ""):
            allowed = response.get("Allow", "")
            problem = errors.problem(
                "method_not_allowed", f"{request.method} is not allowed here; use {allowed}", 405
            )
            problem["Allow"] = allowed
            return problem
        return response

    return csrf_exempt(wrapped)  # token auth: no cookies


def _portal_users_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The docs page: signed-in portal users whose session passed the second factor (the
    MFA middleware leaves /api/v1/ alone, so the check is made here)."""
    from accounts.mfa import MfaSessionState, mfa_session_state

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            login = reverse("accounts:login")
            return HttpResponseRedirect(f"{login}?{urlencode({'next': request.path})}")
        if mfa_session_state(request) is not MfaSessionState.SATISFIED:
            verify = reverse("accounts:mfa_verify")
            return HttpResponseRedirect(f"{verify}?{urlencode({'next': request.path})}")
        response = view(request, *args, **kwargs)
        response["Cache-Control"] = "private, no-store"
        return response

    return wrapped


def urlpatterns() -> list[URLPattern | URLResolver]:
    """The API's URL patterns for kmsportal/urls.py: every view answers problem documents for
    a wrong method, the docs page needs a portal session, and ninja's root view is left out
    (/api/v1/ itself stays vault.api_urls' problem-document 404)."""
    patterns, _app, _namespace = api.urls
    result: list[URLPattern | URLResolver] = []
    for pattern in patterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name == "api-root":
            continue
        callback = pattern.callback
        if pattern.name == "openapi-view":
            callback = _portal_users_only(callback)
        result.append(
            URLPattern(
                pattern.pattern,
                _api_view(callback),
                pattern.default_args,
                pattern.name,
            )
        )
    return result
