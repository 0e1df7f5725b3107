"""Reads for the accounts pages; who-sees-what is decided here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db.models import Count, Q, QuerySet

from kmsportal.keyring.models import MasterKeyRecord

from .roles import Role


def user_list(*, user: AbstractBaseUser, search: str = "") -> QuerySet[User]:
    """Users visible to `user` (everyone, for holders of auth.view_user), with their roles."""
    if not user.has_perm("auth.view_user"):
        return User.objects.none()
    queryset = User.objects.prefetch_related("groups").order_by("username")
    if search:
        queryset = queryset.filter(Q(username__icontains=search) | Q(email__icontains=search))
    return queryset


def dashboard_counts(*, user: AbstractBaseUser) -> list[dict]:
    """The dashboard's numbers: only those the user's permissions let them see."""
    rows: list[dict] = []
    if user.has_perm("auth.view_user"):
        totals = User.objects.aggregate(
            active=Count("pk", filter=Q(is_active=True)),
            inactive=Count("pk", filter=Q(is_active=False)),
        )
        for key in ("active", "inactive"):
            rows.append(
                {
                    "label": f"{key.capitalize()} users",
                    "value": totals[key],
                    "url": "accounts:user_list",
                }
            )
        by_role = dict(
            Group.objects.filter(name__in=Role.values)
            .annotate(n=Count("user", filter=Q(user__is_active=True)))
            .values_list("name", "n")
        )
        for role in Role:
            rows.append(
                {"label": f"{role.label}s", "value": by_role.get(role.value, 0), "url": None}
            )
    if user.has_perm("keyring.view_masterkeyrecord"):
        rows.append(
            {"label": "Master keys seen", "value": MasterKeyRecord.objects.count(), "url": None}
        )
    return rows
