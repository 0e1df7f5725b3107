"""Reads for the accounts pages; who-sees-what is decided here."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from django.db.models import Count, Q, QuerySet

from kmsportal.keyring.models import MasterKeyRecord

from .roles import Role


def user_list(*, user: User, search: str = "", status: str = "", role: str = "") -> QuerySet[User]:
    """Users visible to `user` (everyone, for holders of auth.view_user), with their roles.

    `status` is "active" or "inactive"; `role` a role's group name (active holders only, as
    the dashboard counts them); an unknown value of either filters nothing out."""
    if not user.has_perm("auth.view_user"):
        return User.objects.none()
    queryset = User.objects.prefetch_related("groups").order_by("username")
    if search:
        queryset = queryset.filter(Q(username__icontains=search) | Q(email__icontains=search))
    if status in ("active", "inactive"):
        queryset = queryset.filter(is_active=status == "active")
    if role in Role.values:
        queryset = queryset.filter(groups__name=role, is_active=True)
    return queryset


@dataclass(frozen=True)
class UserCounts:
    """The dashboard's user numbers (the user list's permission)."""

    total: int  # what the user list lists
    active: int
    inactive: int
    by_role: dict[str, int]  # active users per role value, every role present
    master_keys: int | None  # None unless the user may see the keyring's records


def dashboard_user_counts(*, user: User) -> UserCounts | None:
    """Users active and inactive and per role, for holders of auth.view_user; two aggregate
    queries (three with the master key count), never a row per user."""
    if not user.has_perm("auth.view_user"):
        return None
    totals = User.objects.aggregate(
        total=Count("pk"),
        active=Count("pk", filter=Q(is_active=True)),
        inactive=Count("pk", filter=Q(is_active=False)),
    )
    by_role = dict(
        Group.objects.filter(name__in=Role.values)
        .annotate(n=Count("user", filter=Q(user__is_active=True)))
        .values_list("name", "n")
    )
    master_keys = None
    if user.has_perm("keyring.view_masterkeyrecord"):
        master_keys = MasterKeyRecord.objects.count()
    return UserCounts(
        total=totals["total"],
        active=totals["active"],
        inactive=totals["inactive"],
        by_role={role.value: by_role.get(role.value, 0) for role in Role},
        master_keys=master_keys,
    )
