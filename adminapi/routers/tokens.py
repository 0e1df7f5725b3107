"""The caller's own identity and personal API tokens. Making a token is a portal page only
(after the second factor); a token can list its user's tokens and revoke any of them."""

from __future__ import annotations

from datetime import datetime

from ninja import Router, Schema

from accounts.roles import user_roles
from kmsportal.crypto.errors import KMSError

from ..auth import ApiRequest, require
from ..models import ApiToken
from ..permissions import Rule
from ..schemas import PathId
from ..tokens import api_token_list, api_token_revoke

router = Router(tags=["Tokens"])

RULES: dict[str, Rule] = {
    "me": Rule((), write=False, note="any live token"),
    "tokens_list": Rule((), write=False, note="the caller's own tokens"),
    "tokens_revoke": Rule((), write=True, note="the caller's own tokens only"),
}


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    scope: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @staticmethod
    def from_token(token: ApiToken) -> TokenOut:
        return TokenOut(
            id=token.pk,
            name=token.name,
            prefix=token.prefix,
            scope=token.scope,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class MeOut(Schema):
    username: str
    roles: list[str]
    token: TokenOut


@router.get("/me", response=MeOut)
def me(request: ApiRequest) -> MeOut:
    """Who this token acts as, with which roles now, and the token itself."""
    user = require(request, write=False)
    return MeOut(
        username=user.get_username(),
        roles=[r.value for r in user_roles(user)],
        token=TokenOut.from_token(request.auth),
    )


@router.get("", response=list[TokenOut])
def tokens_list(request: ApiRequest) -> list[TokenOut]:
    user = require(request, write=False)
    return [TokenOut.from_token(t) for t in api_token_list(user=user)]


@router.post("/{token_id}/revoke", response=TokenOut)
def tokens_revoke(request: ApiRequest, token_id: PathId) -> TokenOut:
    """Revoke one of the caller's own tokens (this one too)."""
    user = require(request, write=True)
    token = ApiToken.objects.filter(pk=token_id, user=user).first()
    if token is None:
        raise KMSError("no such token of yours", code="not_found", status=404)
    return TokenOut.from_token(api_token_revoke(actor=user, token=token))
