"""Keys and their lifecycle: what the Keys pages do (vault.views), as API calls.

Same services, same permissions as the portal's actions (vault.views.ACTIONS). Destruction is
requested here and decided through /admin/approvals (kind ``destruction``), like every
two-person request. Key material never appears: versions are shown by fingerprint.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal, get_args

from django.http import HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from kmsportal.crypto.errors import KMSError
from vault import approvals, key_import, selectors, services
from vault.models import (
    DESTRUCTION_WAIT_DEFAULT_DAYS,
    DESTRUCTION_WAIT_MAX_DAYS,
    DESTRUCTION_WAIT_MIN_DAYS,
    KEY_NAME_PATTERN,
    ROTATION_DAYS_MAX,
    ROTATION_DAYS_MIN,
    Algorithm,
    ExportPolicy,
    SymmetricKey,
)

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import REASON, Instant

router = Router(tags=["Keys"])

VIEW = "vault.view_symmetrickey"
RULES: dict[str, Rule] = {
    "keys_list": Rule((VIEW,), write=False),
    "keys_get": Rule((VIEW,), write=False),
    "keys_create": Rule(("vault.add_symmetrickey",), write=True),
    "keys_activate": Rule(("vault.suspend_symmetrickey",), write=True),
    "keys_rotate": Rule(("vault.rotate_symmetrickey",), write=True),
    "keys_suspend": Rule(("vault.suspend_symmetrickey",), write=True),
    "keys_resume": Rule(("vault.suspend_symmetrickey",), write=True),
    "keys_deactivate": Rule(("vault.suspend_symmetrickey",), write=True),
    "keys_compromise": Rule(("vault.compromise_symmetrickey",), write=True),
    "keys_destruction_request": Rule(("vault.destroy_symmetrickey",), write=True),
    "keys_destruction_cancel": Rule(("vault.destroy_symmetrickey",), write=True),
    "keys_verify": Rule(("vault.rotate_symmetrickey",), write=True, note="audited check"),
    "keys_export_policy": Rule(("vault.export_policy_symmetrickey",), write=True),
    "keys_import_parameters": Rule(
        ("vault.add_symmetrickey", "vault.rotate_symmetrickey"), write=True
    ),
    "keys_import": Rule(("vault.add_symmetrickey", "vault.rotate_symmetrickey"), write=True),
}

KeyName = Field(pattern=KEY_NAME_PATTERN, max_length=100)
# Spelled out for the type checker; the assertions keep them equal to the models' choices
# (in order: the OpenAPI document lists them so).
KeyType = Literal[
    "aes-256-gcm",
    "hmac-sha256",
    "rsa-3072",
    "rsa-4096",
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
]
assert get_args(KeyType) == tuple(choice.value.lower() for choice in Algorithm)
ExportPolicyName = Literal["never", "two-person", "single"]
assert get_args(ExportPolicyName) == tuple(ExportPolicy.values)


class VersionOut(Schema):
    number: int
    state: str
    is_primary: bool
    origin: str
    fingerprint: str
    created_at: datetime
    activated_at: datetime | None
    deactivated_at: datetime | None
    compromised_at: datetime | None
    destroyed_at: datetime | None


class KeyOut(Schema):
    name: str
    key_type: str
    state: str
    description: str
    export_policy: str
    rotation_period_days: int | None
    next_rotation_at: datetime | None
    min_decryption_version: int
    required_context_keys: list[str]
    allow_compromised_decrypt: bool
    created_at: datetime
    created_by: str
    compromised_at: datetime | None
    destroy_after: datetime | None
    destroyed_at: datetime | None

    @staticmethod
    def from_key(key: SymmetricKey) -> KeyOut:
        return KeyOut(
            name=key.name,
            key_type=key.key_type,
            state=key.state,
            description=key.description,
            export_policy=key.export_policy,
            rotation_period_days=key.rotation_period_days,
            next_rotation_at=key.next_rotation_at,
            min_decryption_version=key.min_decryption_version,
            required_context_keys=list(key.required_context_keys or []),
            allow_compromised_decrypt=key.allow_compromised_decrypt,
            created_at=key.created_at,
            created_by=key.created_by_name,
            compromised_at=key.compromised_at,
            destroy_after=key.destroy_after,
            destroyed_at=key.destroyed_at,
        )


class ImpactOut(Schema):
    version: int
    client: str
    delivered_at: datetime
    group: str


class PendingRequestOut(Schema):
    kind: str = Field(description="decide it at /api/v1/admin/approvals/{kind}/{id}")
    id: int
    summary: str


class KeyDetailOut(KeyOut):
    versions: list[VersionOut]
    compromise_impact: list[ImpactOut] = Field(
        description="clients that received a compromised version (the delivery ledger)"
    )
    pending_requests: list[PendingRequestOut] = Field(
        description="two-person requests about this key the caller may see"
    )


class KeySummaryOut(Schema):
    name: str
    key_type: str
    state: str
    rotation_period_days: int | None
    next_rotation_at: datetime | None
    created_at: datetime
    destroy_after: datetime | None


class KeyPageOut(Schema):
    keys: list[KeySummaryOut]
    next_after: str | None = Field(description="pass as ?after= for the next page")


class KeyFilter(Schema):
    state: str = Field("", max_length=24)
    q: str = Field("", max_length=100, description="name contains")
    overdue: bool = False
    due_within: int | None = Field(default=None, ge=1, le=ROTATION_DAYS_MAX)
    after: str = Field("", max_length=100)


class KeyCreateIn(Schema):
    name: str = KeyName
    key_type: KeyType = "aes-256-gcm"
    description: str = Field("", max_length=1000)
    required_context_keys: list[str] = Field(default_factory=list, max_length=50)
    allow_compromised_decrypt: bool = False
    rotation_period_days: int | None = Field(
        default=None, ge=ROTATION_DAYS_MIN, le=ROTATION_DAYS_MAX
    )
    activate_at: Instant | None = None


class RotateIn(Schema):
    min_decryption_version: int | None = Field(default=None, ge=1, le=1_000_000)


class RotateOut(Schema):
    key: KeyOut
    version: int
    fingerprint: str


class CompromiseIn(Schema):
    scope: Literal["version", "key"] = "version"
    version: int | None = Field(default=None, ge=1, le=1_000_000)
    reason: str = REASON
    compromised_at: Instant | None = None


class CompromiseOut(Schema):
    key: KeyOut
    replacement_version: int | None = None


class DestructionIn(Schema):
    waiting_days: int = Field(
        default=DESTRUCTION_WAIT_DEFAULT_DAYS,
        ge=DESTRUCTION_WAIT_MIN_DAYS,
        le=DESTRUCTION_WAIT_MAX_DAYS,
    )
    reason: str = REASON


class DestructionOut(Schema):
    request_id: int
    status: str
    expires_at: datetime
    approve_at: str = Field(description="where a second key custodian decides it")


class VersionCheckOut(Schema):
    version: int
    ok: bool
    detail: str


class VerifyOut(Schema):
    versions: list[VersionCheckOut]


class ExportPolicyIn(Schema):
    policy: ExportPolicyName
    reason: str = REASON


class ExportPolicyOut(Schema):
    key: KeyOut
    request_id: int | None = Field(
        default=None, description="set when a second custodian must approve"
    )
    grants_withdrawn: int = 0


class ImportParametersIn(Schema):
    name: str = KeyName
    key_size: Literal[3072, 4096] = 3072


class ImportParametersOut(Schema):
    key_name: str
    public_key_pem: str
    import_token: str = Field(description="shown in this response only")
    expires_at: datetime


class ImportIn(Schema):
    name: str = KeyName
    import_token: str = Field(min_length=1, max_length=200)
    wrapped_key: str = Field(
        min_length=1,
        max_length=4 * key_import.WRAPPED_MAX_BYTES,
        description="base64 of RSA_AES_KEY_WRAP_SHA_256 (RSA-OAEP block, then AES key wrap)",
    )


class ImportOut(Schema):
    key: KeyOut
    version: int
    fingerprint: str


def _key(request: ApiRequest, name: str) -> SymmetricKey:
    key = selectors.symmetric_key_get(user=request.user, name=name)
    if key is None:
        raise KMSError(f"no key named {name!r}", code="not_found", status=404)
    return key


def _fresh(key: SymmetricKey) -> KeyOut:
    key.refresh_from_db()
    return KeyOut.from_key(key)


@router.get("", response=KeyPageOut)
def keys_list(request: ApiRequest, filters: Query[KeyFilter]) -> KeyPageOut:
    """Keys in name order, a page at a time (the Keys page's filters)."""
    require(request, VIEW, write=False)
    page = selectors.symmetric_key_page(
        user=request.user,
        state=filters.state,
        search=filters.q,
        overdue=filters.overdue,
        due_within_days=filters.due_within,
        after=filters.after,
    )
    return KeyPageOut(
        keys=[
            KeySummaryOut(
                name=k.name,
                key_type=k.key_type,
                state=k.state,
                rotation_period_days=k.rotation_period_days,
                next_rotation_at=k.next_rotation_at,
                created_at=k.created_at,
                destroy_after=k.destroy_after,
            )
            for k in page.keys
        ],
        next_after=page.next_cursor,
    )


# Before /{name}: "import" is a reserved key name (vault.services.RESERVED_KEY_NAMES).
@router.post("/import/parameters", response=ImportParametersOut)
def keys_import_parameters(
    request: ApiRequest, response: HttpResponse, body: ImportParametersIn
) -> ImportParametersOut:
    """Step 1 of bring-your-own-key: a one-time RSA wrapping key and import token."""
    user = require(request, "vault.add_symmetrickey", "vault.rotate_symmetrickey", write=True)
    parameters = key_import.key_import_parameters_create(
        actor=user, key_name=body.name, key_size=body.key_size
    )
    response["Cache-Control"] = "no-store"
    return ImportParametersOut(
        key_name=parameters.record.key_name,
        public_key_pem=parameters.public_key_pem,
        import_token=parameters.token,
        expires_at=parameters.record.expires_at,
    )


@router.post("/import", response=ImportOut)
def keys_import(request: ApiRequest, body: ImportIn) -> ImportOut:
    """Step 2: the wrapped material with its import token (a new key or a new version)."""
    user = require(request, "vault.add_symmetrickey", "vault.rotate_symmetrickey", write=True)
    try:
        wrapped = base64.b64decode(body.wrapped_key, validate=True)
    except (binascii.Error, ValueError):
        raise KMSError("wrapped_key must be base64", code="validation_failed", status=422) from None
    version = key_import.key_import(
        actor=user, key_name=body.name, wrapped=wrapped, import_token=body.import_token
    )
    key = SymmetricKey.objects.get(name=body.name)
    return ImportOut(
        key=KeyOut.from_key(key), version=version.number, fingerprint=version.fingerprint
    )


@router.get("/{name}", response=KeyDetailOut)
def keys_get(request: ApiRequest, name: str) -> KeyDetailOut:
    """One key with its versions (fingerprints, states; never material), the clients that
    received a compromised version, and its pending two-person requests, as the key page."""
    require(request, VIEW, write=False)
    key = _key(request, name)
    versions = [
        VersionOut(
            number=v.number,
            state=v.state,
            is_primary=v.is_primary,
            origin=v.origin,
            fingerprint=v.fingerprint,
            created_at=v.created_at,
            activated_at=v.activated_at,
            deactivated_at=v.deactivated_at,
            compromised_at=v.compromised_at,
            destroyed_at=v.destroyed_at,
        )
        for v in selectors.key_versions(key=key)
    ]
    pending = [
        PendingRequestOut(
            kind="destruction", id=r.pk, summary=f"destroy after {r.waiting_days} days"
        )
        for r in selectors.destruction_requests_pending(user=request.user)
        if r.key_id == key.pk
    ] + [
        PendingRequestOut(kind=slug, id=r.pk, summary=summary)
        for slug, r, summary in selectors.key_requests_pending(user=request.user, key=key)
    ]
    return KeyDetailOut(
        **KeyOut.from_key(key).dict(),
        versions=versions,
        compromise_impact=[
            ImpactOut(version=i.version, client=i.client, delivered_at=i.time, group=i.group)
            for i in selectors.key_compromise_impact(key=key)
        ],
        pending_requests=pending,
    )


@router.post("", response={201: KeyOut})
def keys_create(request: ApiRequest, body: KeyCreateIn) -> Status[KeyOut]:
    """A new key with version 1 (active now, or pre-active until ``activate_at``)."""
    user = require(request, "vault.add_symmetrickey", write=True)
    key = services.symmetric_key_create(actor=user, **body.dict())
    return Status(201, KeyOut.from_key(key))


@router.post("/{name}/activate", response=KeyOut)
def keys_activate(request: ApiRequest, name: str) -> KeyOut:
    user = require(request, "vault.suspend_symmetrickey", write=True)
    return KeyOut.from_key(services.symmetric_key_activate(actor=user, key=_key(request, name)))


@router.post("/{name}/rotate", response=RotateOut)
def keys_rotate(request: ApiRequest, name: str, body: RotateIn) -> RotateOut:
    """A new primary version; optionally retire versions below ``min_decryption_version``."""
    user = require(request, "vault.rotate_symmetrickey", write=True)
    key = _key(request, name)
    version = services.symmetric_key_rotate(
        actor=user, key=key, min_decryption_version=body.min_decryption_version
    )
    return RotateOut(key=_fresh(key), version=version.number, fingerprint=version.fingerprint)


@router.post("/{name}/suspend", response=KeyOut)
def keys_suspend(request: ApiRequest, name: str) -> KeyOut:
    user = require(request, "vault.suspend_symmetrickey", write=True)
    return KeyOut.from_key(services.symmetric_key_suspend(actor=user, key=_key(request, name)))


@router.post("/{name}/resume", response=KeyOut)
def keys_resume(request: ApiRequest, name: str) -> KeyOut:
    user = require(request, "vault.suspend_symmetrickey", write=True)
    return KeyOut.from_key(services.symmetric_key_resume(actor=user, key=_key(request, name)))


@router.post("/{name}/deactivate", response=KeyOut)
def keys_deactivate(request: ApiRequest, name: str) -> KeyOut:
    user = require(request, "vault.suspend_symmetrickey", write=True)
    return KeyOut.from_key(services.symmetric_key_deactivate(actor=user, key=_key(request, name)))


@router.post("/{name}/compromise", response=CompromiseOut)
def keys_compromise(request: ApiRequest, name: str, body: CompromiseIn) -> CompromiseOut:
    """Report one version (``scope=version``) or the whole key compromised."""
    user = require(request, "vault.compromise_symmetrickey", write=True)
    key = _key(request, name)
    if body.scope == "key":
        services.symmetric_key_compromise(
            actor=user, key=key, reason=body.reason, compromised_at=body.compromised_at
        )
        return CompromiseOut(key=_fresh(key))
    if body.version is None:
        raise KMSError("say which version is compromised", code="validation_failed", status=422)
    replacement = services.key_version_compromise(
        actor=user,
        key=key,
        number=body.version,
        reason=body.reason,
        compromised_at=body.compromised_at,
    )
    return CompromiseOut(
        key=_fresh(key), replacement_version=replacement.number if replacement else None
    )


@router.post("/{name}/destruction", response={202: DestructionOut})
def keys_destruction_request(
    request: ApiRequest, name: str, body: DestructionIn
) -> Status[DestructionOut]:
    """Ask for destruction: a second key custodian decides it through /admin/approvals."""
    user = require(request, "vault.destroy_symmetrickey", write=True)
    destruction = services.destruction_request_create(
        actor=user, key=_key(request, name), waiting_days=body.waiting_days, reason=body.reason
    )
    return Status(
        202,
        DestructionOut(
            request_id=destruction.pk,
            status=destruction.status,
            expires_at=destruction.expires_at,
            approve_at=f"/api/v1/admin/approvals/destruction/{destruction.pk}",
        ),
    )


@router.post("/{name}/destruction/cancel", response=KeyOut)
def keys_destruction_cancel(request: ApiRequest, name: str) -> KeyOut:
    """Cancel an approved destruction during its waiting period."""
    user = require(request, "vault.destroy_symmetrickey", write=True)
    return KeyOut.from_key(
        services.symmetric_key_destruction_cancel(actor=user, key=_key(request, name))
    )


@router.post("/{name}/verify", response=VerifyOut)
def keys_verify(request: ApiRequest, name: str) -> VerifyOut:
    """Unseal every version in memory and compare fingerprints (audited; nothing shown)."""
    user = require(request, "vault.rotate_symmetrickey", write=True)
    results = services.key_material_verify(actor=user, key=_key(request, name))
    return VerifyOut(
        versions=[VersionCheckOut(version=r.number, ok=r.ok, detail=r.detail) for r in results]
    )


@router.post("/{name}/export-policy", response=ExportPolicyOut)
def keys_export_policy(request: ApiRequest, name: str, body: ExportPolicyIn) -> ExportPolicyOut:
    """A stricter policy applies now; a weaker one waits for a second key custodian."""
    user = require(request, "vault.export_policy_symmetrickey", write=True)
    key = _key(request, name)
    outcome = approvals.export_policy_set(
        actor=user, key=key, policy=body.policy, reason=body.reason
    )
    return ExportPolicyOut(
        key=_fresh(key),
        request_id=outcome.request.pk if outcome.request is not None else None,
        grants_withdrawn=outcome.grants_withdrawn,
    )
