"""Reads for the vault pages; who sees what is decided here.

The key list is keyset-paginated on the (unique) name, so a page costs the same with ten
keys or a hundred thousand: no OFFSET, no COUNT(*).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from audit.models import AuditEvent

from .lifecycle import KeyState, VersionState
from .models import DestructionRequest, KeyVersion, SymmetricKey

PAGE_SIZE = 50


def _can_read(user: AbstractBaseUser) -> bool:
    return user.has_perm("vault.view_symmetrickey")


@dataclass(frozen=True)
class KeyPage:
    keys: list[SymmetricKey]
    next_cursor: str | None  # pass as ?after= for the next page
    now: object


def symmetric_key_page(
    *,
    user: AbstractBaseUser,
    state: str = "",
    search: str = "",
    overdue: bool = False,
    after: str = "",
    size: int = PAGE_SIZE,
) -> KeyPage:
    """One page of keys in name order, filtered by state, name prefix/substring, overdue."""
    if not _can_read(user):
        return KeyPage([], None, timezone.now())
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
        queryset = queryset.filter(state=KeyState.ACTIVE, next_rotation_at__lte=timezone.now())
    if after:
        queryset = queryset.filter(name__gt=after)
    rows = list(queryset[: size + 1])
    keys = rows[:size]
    return KeyPage(keys, keys[-1].name if len(rows) > size else None, timezone.now())


def symmetric_key_get(*, user: AbstractBaseUser, name: str) -> SymmetricKey | None:
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
    time: object
    sequence: int


def key_compromise_impact(*, key: SymmetricKey) -> list[ImpactEntry]:
    """Who received a compromised version: read from the audit log's delivery events.

    Until the distribution ledger exists, deliveries are the `key.delivered` audit events
    (details: version); the ledger replaces this when the distribution issue lands.
    """
    compromised = set(
        key.versions.filter(
            state__in=[VersionState.COMPROMISED, VersionState.DESTROYED_COMPROMISED]
        ).values_list("number", flat=True)
    )
    if not compromised:
        return []
    events = AuditEvent.objects.filter(
        action="key.delivered", target_type="vault.SymmetricKey", target_id=str(key.pk)
    ).order_by("-sequence")
    return [
        ImpactEntry(e.details.get("version"), e.actor_name, e.time, e.sequence)
        for e in events.iterator()
        if e.details.get("version") in compromised
    ]


def destruction_requests_pending(*, user: AbstractBaseUser) -> list[DestructionRequest]:
    """Requests waiting for a second custodian (expired ones are shown as such)."""
    if not user.has_perm("vault.view_destructionrequest"):
        return []
    return list(
        DestructionRequest.objects.filter(status=DestructionRequest.Status.PENDING)
        .select_related("key")
        .order_by("requested_at")
    )


def destruction_request_get(*, user: AbstractBaseUser, pk: int) -> DestructionRequest | None:
    if not user.has_perm("vault.view_destructionrequest"):
        return None
    return DestructionRequest.objects.select_related("key").filter(pk=pk).first()


def key_counts_by_state(*, user: AbstractBaseUser) -> dict[str, int]:
    """For the dashboard: number of keys in each state, and overdue rotations."""
    if not _can_read(user):
        return {}
    from django.db.models import Count

    counts = dict(
        SymmetricKey.objects.values_list("state").annotate(n=Count("pk")).values_list("state", "n")
    )
    counts["overdue"] = SymmetricKey.objects.filter(
        state=KeyState.ACTIVE, next_rotation_at__lte=timezone.now()
    ).count()
    return counts
