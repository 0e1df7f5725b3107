"""Reads for the vault pages; who sees what is decided here.

The key list is keyset-paginated on the (unique) name, so a page costs the same with ten
keys or a hundred thousand: no OFFSET, no COUNT(*).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.two_person import ApprovalSummary, pending_summary

from .lifecycle import KeyState, VersionState
from .models import (
    Client,
    Delivery,
    DestructionRequest,
    ExportPolicyRequest,
    Grant,
    GrantRequest,
    KeyVersion,
    SymmetricKey,
)

PAGE_SIZE = 50


def _can_read(user: User) -> bool:
    return user.has_perm("vault.view_symmetrickey")


def _rotation_overdue(now: datetime) -> Q:
    """Active keys whose rotation was due at or before `now` (what rotate_due_keys rotates)."""
    return Q(state=KeyState.ACTIVE, next_rotation_at__lte=now)


def _rotation_due_within(now: datetime, days: int) -> Q:
    """Active keys whose rotation falls due after `now` and within `days` days: the ones
    about to become overdue (the overdue ones are not counted twice)."""
    return Q(
        state=KeyState.ACTIVE,
        next_rotation_at__gt=now,
        next_rotation_at__lte=now + timedelta(days=days),
    )


@dataclass(frozen=True)
class KeyPage:
    keys: list[SymmetricKey]
    next_cursor: str | None  # pass as ?after= for the next page
    now: object


def symmetric_key_page(
    *,
    user: User,
    state: str = "",
    search: str = "",
    overdue: bool = False,
    due_within_days: int | None = None,
    after: str = "",
    size: int = PAGE_SIZE,
) -> KeyPage:
    """One page of keys in name order, filtered by state, name prefix/substring, overdue,
    rotation due within N days (active, not yet overdue)."""
    now = timezone.now()
    if not _can_read(user):
        return KeyPage([], None, now)
    queryset: QuerySet[SymmetricKey] = SymmetricKey.objects.only(
        "id",
        "name",
        "state",
        "algorithm",
        "rotation_period_days",
        "next_rotation_at",
        "created_at",
        "destroy_after",
    ).order_by("name")
    if state:
        queryset = queryset.filter(state=state)
    if search:
        queryset = queryset.filter(name__contains=search.lower())
    if overdue:
        queryset = queryset.filter(_rotation_overdue(now))
    if due_within_days is not None:
        queryset = queryset.filter(_rotation_due_within(now, due_within_days))
    if after:
        queryset = queryset.filter(name__gt=after)
    rows = list(queryset[: size + 1])
    keys = rows[:size]
    return KeyPage(keys, keys[-1].name if len(rows) > size else None, now)


def symmetric_key_get(*, user: User, name: str) -> SymmetricKey | None:
    if not _can_read(user):
        return None
    return SymmetricKey.objects.filter(name=name).first()


def key_versions(*, key: SymmetricKey) -> list[KeyVersion]:
    """Versions newest first, without loading the sealed material."""
    return list(key.versions.defer("sealed_material").order_by("-number"))


def key_timeline(*, key: SymmetricKey, limit: int = 100) -> list[AuditEvent]:
    """The key's lifecycle as the audit log recorded it, newest first."""
    return list(
        AuditEvent.objects.filter(target_type="vault.SymmetricKey", target_id=str(key.pk)).order_by(
            "-sequence"
        )[:limit]
    )


@dataclass(frozen=True)
class ImpactEntry:
    version: int
    client: str
    time: datetime
    group: str


def key_compromise_impact(*, key: SymmetricKey) -> list[ImpactEntry]:
    """Which clients received a compromised version, from the delivery ledger."""
    compromised = list(
        key.versions.filter(
            state__in=[VersionState.COMPROMISED, VersionState.DESTROYED_COMPROMISED]
        ).values_list("number", flat=True)
    )
    if not compromised:
        return []
    rows = (
        Delivery.objects.filter(key=key, version__in=compromised)
        .select_related("client")
        .order_by("-delivered_at")[:500]
    )
    return [ImpactEntry(d.version, d.client.name, d.delivered_at, d.group) for d in rows]


def destruction_requests_pending(*, user: User) -> list[DestructionRequest]:
    """Requests waiting for a second custodian (expired ones are shown as such)."""
    if not user.has_perm("vault.view_destructionrequest"):
        return []
    return list(
        DestructionRequest.objects.filter(status=DestructionRequest.Status.PENDING)
        .select_related("key")
        .order_by("requested_at")
    )


def key_requests_pending(*, user: User, key: SymmetricKey) -> list[tuple[str, Any, str]]:
    """The key's pending grant and export policy requests the user may see, as (kind slug,
    request, what it asks) for the key page."""
    rows: list[tuple[str, Any, str]] = []
    if user.has_perm("vault.view_grantrequest"):
        for grant in GrantRequest.objects.filter(key=key, status="pending").select_related(
            "client"
        ):
            rows.append(("grant", grant, f"Grant to client {grant.client.name}"))
    if user.has_perm("vault.view_exportpolicyrequest"):
        for policy in ExportPolicyRequest.objects.filter(key=key, status="pending"):
            rows.append(
                (
                    "export-policy",
                    policy,
                    f"Export policy {policy.from_policy} → {policy.to_policy}",
                )
            )
    return rows


def destruction_request_get(*, user: User, pk: int) -> DestructionRequest | None:
    if not user.has_perm("vault.view_destructionrequest"):
        return None
    return DestructionRequest.objects.select_related("key").filter(pk=pk).first()


@dataclass(frozen=True)
class KeySummary:
    """The dashboard's key numbers; each matches a key list filter exactly."""

    by_state: dict[str, int]  # every KeyState value, zeros included (?state=)
    rotation_overdue: int  # ?overdue=on
    rotation_due_soon: int  # ?due_within=<due_within_days>
    due_within_days: int
    total: int


def key_summary(
    *, user: User, now: datetime | None = None, due_within_days: int = 7
) -> KeySummary | None:
    """Keys per state and rotations overdue or due soon, for users who may read keys.

    One aggregate query of conditional counts: its cost does not depend on how many keys
    the page would list, and no row is loaded to be counted.
    """
    if not _can_read(user):
        return None
    now = now or timezone.now()
    counts = SymmetricKey.objects.aggregate(
        total=Count("pk"),
        rotation_overdue=Count("pk", filter=_rotation_overdue(now)),
        rotation_due_soon=Count("pk", filter=_rotation_due_within(now, due_within_days)),
        **{f"state_{state.value}": Count("pk", filter=Q(state=state)) for state in KeyState},
    )
    return KeySummary(
        by_state={state.value: counts[f"state_{state.value}"] for state in KeyState},
        rotation_overdue=counts["rotation_overdue"],
        rotation_due_soon=counts["rotation_due_soon"],
        due_within_days=due_within_days,
        total=counts["total"],
    )


def destruction_request_summary(
    *, user: User, now: datetime | None = None
) -> ApprovalSummary | None:
    """Pending destruction requests for users who may see the inbox; one aggregate query."""
    if not user.has_perm("vault.view_destructionrequest"):
        return None
    return pending_summary(
        DestructionRequest,
        user=user,
        can_approve=user.has_perm("vault.destroy_symmetrickey"),
        now=now or timezone.now(),
    )


# --- clients and grants -----------------------------------------------------------------


def client_list(*, user: User) -> list[Client]:
    if not user.has_perm("vault.view_client"):
        return []
    return list(Client.objects.select_related("certificate").order_by("name"))


def client_get(*, user: User, name: str) -> Client | None:
    if not user.has_perm("vault.view_client"):
        return None
    return Client.objects.select_related("certificate").filter(name=name).first()


def client_grants(*, client: Client) -> list[Grant]:
    return list(client.grants.select_related("key").order_by("-created_at"))


def client_deliveries(*, client: Client, limit: int = 50) -> list[Delivery]:
    return list(client.deliveries.select_related("key").order_by("-delivered_at")[:limit])


def key_grants(*, key: SymmetricKey) -> list[Grant]:
    return list(key.grants.filter(withdrawn_at__isnull=True).select_related("client"))


@dataclass(frozen=True)
class KeyCustody:
    """Which key backend keeps this deployment's keys and what destruction reaches."""

    backend: str
    destruction_guarantee: str
    destruction_reaches_backups: bool


def key_custody() -> KeyCustody:
    from kmsportal.keyring.backends import key_backend

    backend = key_backend()
    return KeyCustody(
        backend.name, backend.destruction_guarantee, backend.destruction_reaches_backups
    )
