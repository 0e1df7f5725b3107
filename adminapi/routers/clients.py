"""Client services and their grants: what the Clients pages do (vault.client_views).

Creating a client answers its one-time enrollment token (in that response only). A grant that
includes ``fetch`` follows the key's export policy: refused for ``never``, a two-person request
for ``two-person`` (answered 202 with the request; a second key custodian decides it through
/admin/approvals, kind ``grant``), made at once for ``single``; a grant of operations only
(encrypt, decrypt, sign, ...) releases no key material and is made at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from django.http import HttpResponse
from ninja import Router, Schema, Status
from pydantic import Field

from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.operations import OPERATIONS
from vault import approvals, clients, selectors
from vault.models import Client, Grant, GrantVersions, SymmetricKey

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import REASON, Instant, PathId, ReasonIn

router = Router(tags=["Clients and grants"])

VIEW = "vault.view_client"
RULES: dict[str, Rule] = {
    "clients_list": Rule((VIEW,), write=False),
    "clients_get": Rule((VIEW,), write=False),
    "clients_create": Rule(("vault.add_client",), write=True),
    "clients_suspend": Rule(("vault.change_client",), write=True),
    "clients_resume": Rule(("vault.change_client",), write=True),
    "clients_revoke": Rule(("vault.change_client",), write=True),
    "clients_enrollment_token": Rule(("vault.change_client",), write=True),
    "grants_create": Rule(("vault.add_grant",), write=True),
    "grants_withdraw": Rule(("vault.change_grant",), write=True),
}

ClientName = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$", max_length=64)
# Spelled out for the type checker; the assertions keep them equal to the services' own
# tuples (in order: the OpenAPI document lists them so).
Operation = Literal[
    "fetch",
    "encrypt",
    "decrypt",
    "reencrypt",
    "generate-data-key",
    "mac",
    "mac-verify",
    "sign",
    "verify",
    "public-key",
]
assert get_args(Operation) == tuple(OPERATIONS)
RevocationReason = Literal["affiliationChanged", "keyCompromise", "cessationOfOperation"]
assert get_args(RevocationReason) == tuple(clients.CLIENT_REVOCATION_REASONS)
GrantVersionsName = Literal["primary", "all"]
assert get_args(GrantVersionsName) == tuple(GrantVersions.values)


class GrantOut(Schema):
    id: int
    key: str
    operations: list[str]
    versions: str
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    withdrawn_at: datetime | None

    @staticmethod
    def from_grant(grant: Grant) -> GrantOut:
        return GrantOut(
            id=grant.pk,
            key=grant.key.name,
            operations=grant.operation_list,
            versions=grant.versions,
            expires_at=grant.expires_at,
            created_at=grant.created_at,
            created_by=grant.created_by_name,
            withdrawn_at=grant.withdrawn_at,
        )


class ClientOut(Schema):
    name: str
    description: str
    state: str
    enrolled_at: datetime | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revocation_reason: str

    @staticmethod
    def from_client(client: Client) -> ClientOut:
        return ClientOut(
            name=client.name,
            description=client.description,
            state=client.state,
            enrolled_at=client.enrolled_at,
            created_at=client.created_at,
            created_by=client.created_by_name,
            revoked_at=client.revoked_at,
            revocation_reason=client.revocation_reason,
        )


class PendingGrantOut(Schema):
    request_id: int
    key: str
    operations: list[str]
    requested_by: str
    expires_at: datetime


class DeliveryOut(Schema):
    key: str
    version: int
    group: str
    delivered_at: datetime


class ClientDetailOut(ClientOut):
    grants: list[GrantOut]
    pending_grants: list[PendingGrantOut]
    deliveries: list[DeliveryOut] = Field(description="the newest 50 key deliveries")


class ClientCreateIn(Schema):
    name: str = ClientName
    description: str = Field("", max_length=1000)


class EnrollmentOut(Schema):
    client: ClientOut
    enrollment_token: str | None = Field(description="shown in this response only")
    request_id: int | None = Field(
        default=None,
        description="set when a second key custodian must approve (they get the token)",
    )


class RevokeIn(Schema):
    reason: RevocationReason


def _fetch_only() -> list[Operation]:
    return ["fetch"]


class GrantIn(Schema):
    key: str = Field(min_length=1, max_length=100)
    operations: list[Operation] = Field(
        default_factory=_fetch_only, min_length=1, max_length=len(OPERATIONS)
    )
    versions: GrantVersionsName = "primary"
    expires_at: Instant | None = None
    reason: str = REASON


class GrantOutcomeOut(Schema):
    grant: GrantOut | None = None
    request_id: int | None = Field(
        default=None,
        description="a fetch grant waiting for a second key custodian (/admin/approvals)",
    )


def _client(request: ApiRequest, name: str) -> Client:
    client = selectors.client_get(user=request.user, name=name)
    if client is None:
        raise KMSError(f"no client named {name!r}", code="not_found", status=404)
    return client


@router.get("", response=list[ClientOut])
def clients_list(request: ApiRequest) -> list[ClientOut]:
    require(request, VIEW, write=False)
    return [ClientOut.from_client(c) for c in selectors.client_list(user=request.user)]


@router.get("/{name}", response=ClientDetailOut)
def clients_get(request: ApiRequest, name: str) -> ClientDetailOut:
    """One client with its grants, the grant requests waiting for approval and the newest
    deliveries (which key versions it received), as its portal page shows them."""
    require(request, VIEW, write=False)
    client = _client(request, name)
    pending = client.grant_requests.filter(status="pending").select_related("key")
    return ClientDetailOut(
        **ClientOut.from_client(client).dict(),
        grants=[GrantOut.from_grant(g) for g in selectors.client_grants(client=client)],
        pending_grants=[
            PendingGrantOut(
                request_id=r.pk,
                key=r.key.name,
                operations=[op for op in r.operations.split(",") if op],
                requested_by=r.requested_by_name,
                expires_at=r.expires_at,
            )
            for r in pending
        ],
        deliveries=[
            DeliveryOut(
                key=d.key.name, version=d.version, group=d.group, delivered_at=d.delivered_at
            )
            for d in selectors.client_deliveries(client=client)
        ],
    )


@router.post("", response={201: EnrollmentOut})
def clients_create(
    request: ApiRequest, response: HttpResponse, body: ClientCreateIn
) -> Status[EnrollmentOut]:
    """Register a client service; its one-time enrollment token is in this response only."""
    user = require(request, "vault.add_client", write=True)
    client, token = clients.client_create(actor=user, name=body.name, description=body.description)
    response["Cache-Control"] = "no-store"
    return Status(201, EnrollmentOut(client=ClientOut.from_client(client), enrollment_token=token))


@router.post("/{name}/suspend", response=ClientOut)
def clients_suspend(request: ApiRequest, name: str) -> ClientOut:
    user = require(request, "vault.change_client", write=True)
    return ClientOut.from_client(clients.client_suspend(actor=user, client=_client(request, name)))


@router.post("/{name}/resume", response=ClientOut)
def clients_resume(request: ApiRequest, name: str) -> ClientOut:
    user = require(request, "vault.change_client", write=True)
    return ClientOut.from_client(clients.client_resume(actor=user, client=_client(request, name)))


@router.post("/{name}/revoke", response=ClientOut)
def clients_revoke(request: ApiRequest, name: str, body: RevokeIn) -> ClientOut:
    """Cut the client off for good; its certificate is revoked in the same transaction."""
    user = require(request, "vault.change_client", write=True)
    return ClientOut.from_client(
        clients.client_revoke(actor=user, client=_client(request, name), reason=body.reason)
    )


@router.post("/{name}/enrollment-token", response={200: EnrollmentOut, 202: EnrollmentOut})
def clients_enrollment_token(
    request: ApiRequest, response: HttpResponse, name: str, body: ReasonIn
) -> Status[EnrollmentOut]:
    """A fresh enrollment token: now (200) when the client holds no live fetch grant, else a
    two-person request (202) whose approver receives the token."""
    user = require(request, "vault.change_client", write=True)
    client = _client(request, name)
    outcome = approvals.client_reenrollment_request(actor=user, client=client, reason=body.reason)
    response["Cache-Control"] = "no-store"
    client.refresh_from_db()
    if outcome.token is not None:
        return Status(
            200, EnrollmentOut(client=ClientOut.from_client(client), enrollment_token=outcome.token)
        )
    assert outcome.request is not None
    return Status(
        202,
        EnrollmentOut(
            client=ClientOut.from_client(client),
            enrollment_token=None,
            request_id=outcome.request.pk,
        ),
    )


@router.post("/{name}/grants", response={201: GrantOutcomeOut, 202: GrantOutcomeOut})
def grants_create(request: ApiRequest, name: str, body: GrantIn) -> Status[GrantOutcomeOut]:
    """Allow the client operations on a key (201), or ask for a fetch grant (202)."""
    user = require(request, "vault.add_grant", write=True)
    client = _client(request, name)
    key = SymmetricKey.objects.filter(name=body.key).first()
    if key is None:
        raise KMSError(f"no key named {body.key!r}", code="not_found", status=404)
    outcome = approvals.grant_request_create(
        actor=user,
        client=client,
        key=key,
        versions=body.versions,
        expires_at=body.expires_at,
        operations=list(dict.fromkeys(body.operations)),
        reason=body.reason,
    )
    if outcome.grant is not None:
        return Status(201, GrantOutcomeOut(grant=GrantOut.from_grant(outcome.grant)))
    assert outcome.request is not None
    return Status(202, GrantOutcomeOut(request_id=outcome.request.pk))


@router.post("/{name}/grants/{grant_id}/withdraw", response=GrantOut)
def grants_withdraw(request: ApiRequest, name: str, grant_id: PathId) -> GrantOut:
    user = require(request, "vault.change_grant", write=True)
    client = _client(request, name)
    grant = client.grants.filter(pk=grant_id).select_related("key").first()
    if grant is None:
        raise KMSError("no such grant for this client", code="not_found", status=404)
    return GrantOut.from_grant(clients.grant_withdraw(actor=user, grant=grant))
