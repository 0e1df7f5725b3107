"""Privileged role grants as the shared two-person inbox and confirmation page show them."""

from __future__ import annotations

from typing import Any

from kmsportal.two_person import Confirmation, Decision, TwoPersonKind, two_person_kind_register

from .models import RoleGrantRequest
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
