"""Who calls the admin API, and what they may do: personal API tokens, then permissions.

Every operation is authenticated by :class:`ApiTokenAuth` (set once on the NinjaAPI, so no
router can forget it): ``Authorization: Bearer kms_<prefix>_<secret>``. A missing, unknown,
expired or revoked token, or one of an inactive user, answers 401 and writes nothing (no audit
event: unauthenticated garbage must not be able to fill the audit log). A live token sets
``request.user`` to its user (so the access-denied audit of audit.middleware names them) and
``request.auth`` to the :class:`~adminapi.models.ApiToken`.

Scope: a ``read-only`` token is refused (403 ``read_only_token``) for any method other than
GET/HEAD/OPTIONS before the operation runs, whatever the operation declares: reads are GET,
everything that may change state is POST/PUT/PATCH/DELETE.

Each operation then calls :func:`require` first, with the permissions the portal page for the
same thing checks and ``write=True`` when it may change state, exactly as declared in its
router's ``RULES`` (adminapi.permissions); the authorization-matrix test checks the two agree
for every operation and every role and scope::

    @router.get("/keys", response=list[KeyOut])
    def keys_list(request):
        require(request, "vault.view_symmetrickey", write=False)
        ...

Refusals raise a 403 problem (``permission_denied``, ``read_only_token``) and are audited as
``access.denied`` by audit.middleware, as the portal's are.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.security import HttpBearer

from audit.middleware import audit_denied_reason_set
from kmsportal.crypto.errors import KMSError

from .models import ApiToken
from .tokens import api_token_authenticate, api_token_used

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Forbidden(KMSError):
    """403: the token's scope or its user's permissions do not allow this operation."""

    code = "permission_denied"
    status = 403


class ApiRequest(HttpRequest):
    """For the type checker: a request that :class:`ApiTokenAuth` let through (it is set on
    the NinjaAPI, so every operation's request is one): ``auth`` is the live token and
    ``user`` its user. At run time requests are plain `HttpRequest` objects."""

    user: User
    auth: ApiToken


class ApiTokenAuth(HttpBearer):
    """Bearer personal API tokens (adminapi.tokens)."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = api_token_authenticate(token.strip())
        if found is None:
            return None
        request.user = found.user
        write = request.method not in SAFE_METHODS
        if write and not found.writes:
            audit_denied_reason_set(request, "read-only API token")
            raise Forbidden(
                "this token is read-only: it can never change anything. Make a token with "
                "the 'roles' scope for this.",
                code="read_only_token",
            )
        api_token_used(token=found, method=request.method or "", path=request.path, write=write)
        return found


def require(
    request: ApiRequest, *permissions: str, write: bool, any_of: tuple[str, ...] = ()
) -> User:
    """The calling user, once the token's scope and the user's current permissions allow the
    operation (all of ``permissions``, and one of ``any_of`` if given); else a 403 problem.
    Call it first in every operation."""
    token = request.auth
    user = token.user
    if write and not token.writes:
        audit_denied_reason_set(request, "read-only API token")
        raise Forbidden(
            "this token is read-only: it can never change anything", code="read_only_token"
        )
    missing = [p for p in permissions if not user.has_perm(p)]
    if any_of and not any(user.has_perm(p) for p in any_of):
        missing.append(" or ".join(any_of))
    if missing:
        audit_denied_reason_set(request, f"missing permission {', '.join(missing)}"[:200])
        raise Forbidden(
            f"this needs the {', '.join(missing)} permission, which none of "
            f"{user.get_username()}'s roles gives"
        )
    return user
