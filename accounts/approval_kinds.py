"""Privileged role grants, and demoting or deactivating an administrator, as the shared
two-person inbox and confirmation page show them."""

from __future__ import annotations

from typing import Any

from kmsportal.two_person import Confirmation, Decision, TwoPersonKind, two_person_kind_register

from .models import AdministratorRemovalRequest, RoleGrantRequest
from .roles import Role, user_roles


def _confirmation(request: RoleGrantRequest) -> Confirmation:
    from . import mfa

    user = request.user
    status = mfa.mfa_status(user=user)
    setup = getattr(user, "account_setup", None)
    return Confirmation(
        title=f"Grant {', '.join(Role(r).label for r in request.roles)} to {user.username}",
        changes=[
            ("User", f"{user.username}" + (f" <{user.email}>" if user.email else "")),
            ("Roles added", ", ".join(Role(r).label for r in request.roles)),
            ("Roles held now", ", ".join(r.label for r in user_roles(user)) or "none"),
        ],
        affected=[
            ("Account created", f"{user.date_joined:%Y-%m-%d %H:%M} UTC"),
            (
                "Own password",
                f"chosen {setup.password_chosen_at:%Y-%m-%d %H:%M} UTC"
                if setup and setup.password_chosen_at
                else "not yet (invitation not accepted)",
            ),
            (
                "Own authenticator",
                f"enrolled {status.enrolled_at:%Y-%m-%d %H:%M} UTC"
                if status.enrolled
                else "not yet",
            ),
            ("Active", "yes" if user.is_active else "no"),
        ],
        warning=(
            "The roles take effect at once. Approve only if you know this person and that "
            "they need these roles."
        ),
    )


def _approve(*, actor: Any, request: RoleGrantRequest) -> Decision:
    from . import services

    done = services.role_grant_approve(actor=actor, request=request)
    return Decision(
        f"Approved: {done.user.username} now holds {', '.join(Role(r).label for r in done.roles)}."
    )


def _reject(*, actor: Any, request: RoleGrantRequest, comment: str = "") -> Any:
    from . import services

    return services.role_grant_reject(actor=actor, request=request, comment=comment)


def _withdraw(*, actor: Any, request: RoleGrantRequest) -> Any:
    from . import services

    return services.role_grant_withdraw(actor=actor, request=request)


def _removal_confirmation(request: AdministratorRemovalRequest) -> Confirmation:
    from django.contrib.auth.models import User

    user = request.user
    demote = request.change == AdministratorRemovalRequest.Change.DEMOTE
    administrators = list(
        User.objects.filter(is_active=True, groups__name=Role.ADMINISTRATOR)
        .order_by("username")
        .values_list("username", flat=True)
    )
    after = [name for name in administrators if name != user.username]
    return Confirmation(
        title=(
            f"Remove the administrator role from {user.username}"
            if demote
            else f"Deactivate administrator {user.username}"
        ),
        changes=[
            ("User", f"{user.username}" + (f" <{user.email}>" if user.email else "")),
            (
                "Change",
                "the administrator role is removed (other roles stay)"
                if demote
                else "the account is deactivated: no sign-in, open sessions end",
            ),
            ("Roles held now", ", ".join(r.label for r in user_roles(user)) or "none"),
        ],
        affected=[
            ("Active administrators now", ", ".join(administrators) or "none"),
            ("Active administrators after", ", ".join(after) or "none"),
        ],
        warning=(
            "With fewer than two active administrators, role grants apply at once with no "
            "second administrator's approval. Approve only if you know why "
            f"{user.username} should stop being an administrator."
            if len(after) < 2
            else ""
        ),
    )


def _removal_approve(*, actor: Any, request: AdministratorRemovalRequest) -> Decision:
    from . import services

    done = services.administrator_removal_approve(actor=actor, request=request)
    what = (
        "is no longer an administrator"
        if done.change == AdministratorRemovalRequest.Change.DEMOTE
        else "was deactivated and can no longer sign in"
    )
    return Decision(f"Approved: {done.user.username} {what}.")


def _removal_reject(*, actor: Any, request: AdministratorRemovalRequest, comment: str = "") -> Any:
    from . import services

    return services.administrator_removal_reject(actor=actor, request=request, comment=comment)


def _removal_withdraw(*, actor: Any, request: AdministratorRemovalRequest) -> Any:
    from . import services

    return services.administrator_removal_withdraw(actor=actor, request=request)


def register() -> None:

    two_person_kind_register(
        TwoPersonKind(
            slug="role-grant",
            label="Privileged role grant",
            model=RoleGrantRequest,
            permission="auth.change_user",
            visible="auth.view_user",
            summary=lambda r: f"grant {', '.join(r.roles)} to {r.user.username}",
            confirmation=_confirmation,
            approve=_approve,
            reject=_reject,
            withdraw=_withdraw,
            related=("user",),
        )
    )
    two_person_kind_register(
        TwoPersonKind(
            slug="administrator-removal",
            label="Demoting or deactivating an administrator",
            model=AdministratorRemovalRequest,
            permission="auth.change_user",
            visible="auth.view_user",
            summary=lambda r: f"{r.change} administrator {r.user.username}",
            confirmation=_removal_confirmation,
            approve=_removal_approve,
            reject=_removal_reject,
            withdraw=_removal_withdraw,
            related=("user",),
        )
    )
