"""Reads for the accounts pages; who-sees-what is decided here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db.models import Count, Q, QuerySet
from django.urls import reverse

from kmsportal.keyring.models import MasterKeyRecord
from vault.lifecycle import KeyState
from vault.selectors import key_counts_by_state

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
                    "href": reverse("accounts:user_list"),
                }
            )
        by_role = dict(
            Group.objects.filter(name__in=Role.values)
            .annotate(n=Count("user", filter=Q(user__is_active=True)))
            .values_list("name", "n")
        )
        for role in Role:
            rows.append(
                {"label": f"{role.label}s", "value": by_role.get(role.value, 0), "href": None}
            )
    keys = key_counts_by_state(user=user)
    if keys:
        base = reverse("vault:key_list")
        for state in KeyState:
            if keys.get(state.value):
                rows.append(
                    {
                        "label": f"Keys {state.label}",
                        "value": keys[state.value],
                        "href": f"{base}?state={state.value}",
                    }
                )
        rows.append(
            {
                "label": "Keys overdue for rotation",
                "value": keys.get("overdue", 0),
                "href": f"{base}?overdue=on",
            }
        )
    if user.has_perm("keyring.view_masterkeyrecord"):
        rows.append(
            {"label": "Master keys seen", "value": MasterKeyRecord.objects.count(), "href": None}
        )
    return rows
