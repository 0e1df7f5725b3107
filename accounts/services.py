"""User management: every change is one transaction, guarded by the account policy.

Guards that keep the portal administrable:
- nobody can deactivate or demote the last active administrator;
- nobody changes their own roles, deactivates themselves or resets their own password here
  (their own password goes through the change-password page, which asks for the old one).

Separation of duties (docs/separation-of-duties.md):
- an administrator never sets or sees a password: a new account, and a password reset, get
  a one-time invitation link (accounts.invitations) where the person sets their own;
- once two or more active administrators exist, adding a role to anyone is a request that
  a second administrator approves (:func:`role_grant_approve`). Before that (the bootstrap
  administrator setting up the first team) roles apply at once;
- for the same reason, while two or more administrators are active, taking the administrator
  role from another administrator or deactivating them is a request a second administrator
  approves (:func:`administrator_removal_approve`): otherwise one administrator could bring
  the count below two, grant roles alone, and restore the other. Other removals are
  immediate.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_event_record
from kmsportal.actors import actor_name
from kmsportal.crypto.errors import KMSError
from kmsportal.two_person import (
    TwoPersonError,
    TwoPersonStatus,
    two_person_check_not_requester,
    two_person_check_unexpired,
    two_person_decide,
    two_person_lapse,
    two_person_locked,
    two_person_reason,
    two_person_reject,
    two_person_withdraw,
)

from .approvers import approver_check
from .events import AccountAction
from .invitations import invitation_issue
from .models import (
    AccountSetup,
    AdministratorRemovalRequest,
    Invitation,
    RoleAssignment,
    RoleGrantRequest,
)
from .roles import Role

# Deciding a role grant: the administrators' permission to manage users.
ROLE_GRANT_PERMISSION = "auth.change_user"


class AccountPolicyError(KMSError):
    """A user-management action the account policy refuses; the message says why."""

    code = "account_policy"
    status = 409


def password_generate() -> str:
    """A random initial password: 144 bits from the OS CSPRNG, URL-safe, 24 characters."""
    return secrets.token_urlsafe(18)


def _active_administrators_locked() -> list[int]:
    """Ids of active administrators, rows locked until the transaction ends.

    The lock serialises two administrators demoting each other at the same moment: the
    second one counts after the first has committed and is refused.
    """
    return list(
        User.objects.select_for_update()
        .filter(is_active=True, groups__name=Role.ADMINISTRATOR)
        .values_list("pk", flat=True)
    )


def _is_last_active_administrator(user: User) -> bool:
    administrators = _active_administrators_locked()
    return administrators == [user.pk]


def _groups(roles: Iterable[Role]) -> list[Group]:
    names = [Role(role).value for role in roles]
    groups = list(Group.objects.filter(name__in=names))
    missing = set(names) - {g.name for g in groups}
    if missing:
        raise AccountPolicyError(
            f"role group(s) {', '.join(sorted(missing))} missing; run `manage.py migrate`"
        )
    return groups


ROLE_GRANT_REQUEST_TTL = timedelta(days=7)


def _active_administrator_count() -> int:
    """Active administrators, rows locked (see :func:`_active_administrators_locked`)."""
    return len(_active_administrators_locked())


def role_grants_need_approval() -> bool:
    """True once two or more active administrators exist: from then on every role added to
    anyone waits for a second administrator's approval."""
    return _active_administrator_count() >= 2


def _roles_add(user: User, roles: Iterable[Role], *, by: str) -> None:
    roles = [Role(r) for r in roles]
    user.groups.add(*_groups(roles))
    for role in roles:
        RoleAssignment.objects.get_or_create(
            user=user, role=role.value, defaults={"granted_by_name": by}
        )


def _roles_remove(user: User, roles: Iterable[Role]) -> None:
    roles = [Role(r) for r in roles]
    if roles:
        user.groups.remove(*_groups(roles))
        RoleAssignment.objects.filter(user=user, role__in=[r.value for r in roles]).delete()


def _role_grant_request(
    *, actor: User | None, user: User, roles: list[Role], reason: str
) -> RoleGrantRequest:
    two_person_lapse(
        RoleGrantRequest,
        user=user,
        record=lambda lapsed: _role_grant_record(
            AccountAction.ROLE_GRANT_EXPIRED, actor=None, request=lapsed
        ),
    )
    if RoleGrantRequest.objects.filter(user=user, status=TwoPersonStatus.PENDING).exists():
        raise AccountPolicyError(
            f"a role grant for {user.username} is already waiting for approval; approve, "
            "reject or withdraw it first"
        )
    try:
        cleaned = two_person_reason(reason)
    except TwoPersonError as exc:
        raise AccountPolicyError(
            "say why: with two or more administrators a role grant waits for a second "
            "administrator, who reads your reason"
        ) from exc
    now = timezone.now()
    request = RoleGrantRequest.objects.create(
        user=user,
        roles=[r.value for r in roles],
        reason=cleaned,
        requested_by=actor,
        requested_by_name=actor_name(actor),
        requested_at=now,
        expires_at=now + ROLE_GRANT_REQUEST_TTL,
    )
    audit_event_record(
        action=AccountAction.ROLE_GRANT_REQUESTED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={
            "request": request.pk,
            "roles": request.roles,
            "reason": request.reason,
            "expires_at": request.expires_at.isoformat(),
        },
    )
    return request


@dataclass(frozen=True)
class UserCreated:
    user: User
    invitation_token: str  # shown once, in the link the administrator hands over
    role_request: RoleGrantRequest | None  # the roles wait for a second administrator


@transaction.atomic
def user_create(
    *,
    actor: User | None,
    username: str,
    roles: Iterable[Role],
    email: str = "",
    reason: str = "",
) -> UserCreated:
    """Create an account without a usable password, and its one-time invitation link.

    The person sets their own password at the link (nobody else ever knows it). The roles
    apply at once while fewer than two active administrators exist; after that they become
    a :class:`RoleGrantRequest` (with ``reason``) that a second administrator approves.
    `actor` is None for the system (commands).
    """
    roles = list(roles)
    if not roles:
        raise AccountPolicyError("choose at least one role")
    # As authentication reads it (NFKC), so that no two accounts differ only by spelling.
    username = User.normalize_username(username.strip())
    if User.objects.filter(username__iexact=username).exists():
        raise AccountPolicyError(
            f"a user named {username!r} already exists; to give them a new invitation link, "
            "use “Reset password (new invitation link)” on their page (Users)"
        )
    user = User(username=username, email=email)
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    AccountSetup.objects.create(user=user)
    pending = role_grants_need_approval()
    audit_event_record(
        action=AuditAction.USER_CREATED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={
            "roles": [Role(r).value for r in roles],
            "email": email,
            "roles_wait_for_approval": pending,
        },
    )
    request = None
    if pending:
        request = _role_grant_request(actor=actor, user=user, roles=roles, reason=reason)
    else:
        _roles_add(user, roles, by=actor_name(actor))
    token = invitation_issue(actor=actor, user=user, purpose=Invitation.Purpose.NEW_ACCOUNT)
    return UserCreated(user=user, invitation_token=token, role_request=request)


@transaction.atomic
def user_bootstrap_administrator(*, username: str, email: str = "") -> tuple[User, str]:
    """The first administrator of a fresh deployment (`manage.py bootstrap`), with a random
    password printed once to whoever runs the command: the person who holds the server's
    shell, whom no rule in the portal can stop anyway. Refused once an administrator exists.
    """
    if _active_administrator_count():
        raise AccountPolicyError("an administrator already exists")
    if User.objects.filter(username__iexact=username).exists():
        raise AccountPolicyError(f"a user named {username!r} already exists")
    password = password_generate()
    user = User(username=username, email=email)
    validate_password(password, user)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    AccountSetup.objects.create(user=user, password_chosen_at=timezone.now())
    _roles_add(user, [Role.ADMINISTRATOR], by="system")
    audit_event_record(
        action=AuditAction.USER_CREATED,
        actor=None,
        target=user,
        target_label=user.username,
        details={
            "roles": [Role.ADMINISTRATOR.value],
            "email": email,
            "initial_password_generated": True,
            "bootstrap": True,
        },
    )
    return user, password


@dataclass(frozen=True)
class RolesChanged:
    previous: list[Role]
    removed: list[Role]  # applied now
    added: list[Role]  # applied now
    request: RoleGrantRequest | None  # added roles waiting for a second administrator
    # the administrator role's removal, waiting for a second administrator
    removal_request: AdministratorRemovalRequest | None = None


@transaction.atomic
def user_roles_set(
    *, actor: User, user: User, roles: Iterable[Role], reason: str = ""
) -> RolesChanged:
    """Make the user's roles ``roles``: removals apply at once; additions too while fewer
    than two active administrators exist, else they wait for a second administrator. While
    two or more administrators are active, removing the administrator role from an active
    administrator waits for a second administrator too (an
    :class:`AdministratorRemovalRequest` with ``reason``)."""
    roles = list(dict.fromkeys(Role(r) for r in roles))
    if actor.pk == user.pk:
        raise AccountPolicyError("you cannot change your own roles; ask another administrator")
    if not roles:
        raise AccountPolicyError("choose at least one role (deactivate the user instead)")
    previous = [r for r in Role if user.groups.filter(name=r.value).exists()]
    if (
        Role.ADMINISTRATOR in previous
        and Role.ADMINISTRATOR not in roles
        and user.is_active
        and _is_last_active_administrator(user)
    ):
        raise AccountPolicyError(
            f"{user.username} is the last active administrator and cannot be demoted"
        )
    removed = [r for r in previous if r not in roles]
    adding = [r for r in roles if r not in previous]
    removal_request = None
    if Role.ADMINISTRATOR in removed and _administrator_removal_needs_approval(user):
        removal_request = _administrator_removal_request(
            actor=actor, user=user, change=AdministratorRemovalRequest.Change.DEMOTE, reason=reason
        )
        removed.remove(Role.ADMINISTRATOR)
    request = None
    if adding and role_grants_need_approval():
        request = _role_grant_request(actor=actor, user=user, roles=adding, reason=reason)
        added: list[Role] = []
    else:
        added = adding
    _roles_remove(user, removed)
    _roles_add(user, added, by=actor.get_username())
    audit_event_record(
        action=AuditAction.USER_ROLES_CHANGED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={
            "from": [r.value for r in previous],
            "to": [r.value for r in previous if r not in removed] + [r.value for r in added],
            "waiting_for_approval": [r.value for r in adding] if request else [],
            "reason": reason.strip()[:1000],
            # the administrator role's removal waits for a second administrator
            **({"removal_request": removal_request.pk} if removal_request else {}),
        },
    )
    return RolesChanged(
        previous=previous,
        removed=removed,
        added=added,
        request=request,
        removal_request=removal_request,
    )


def _role_grant_record(
    action: AccountAction, *, actor: User | None, request: RoleGrantRequest, **details: object
) -> None:
    audit_event_record(
        action=action,
        actor=actor,
        target=request.user,
        target_label=request.user.username,
        details={
            "request": request.pk,
            "roles": request.roles,
            "requested_by": request.requested_by_name,
            "reason": request.reason,
            **details,
        },
    )


@transaction.atomic
def role_grant_approve(*, actor: User, request: RoleGrantRequest) -> RoleGrantRequest:
    """A second administrator approves: the roles take effect now. Refused for the
    requester, for the user the roles are for, for an approver who is not eligible
    (accounts.approvers: own password, own second factor, cooling-off) and for an expired
    request; nothing changes then."""
    request = two_person_locked(RoleGrantRequest, request.pk, related=("user",))
    two_person_check_not_requester(request, actor)
    if request.user_id == actor.pk:
        raise AccountPolicyError("nobody approves roles for themselves")
    approver_check(user=actor, permission=ROLE_GRANT_PERMISSION)
    two_person_check_unexpired(request)
    subject = User.objects.select_for_update().get(pk=request.user_id)
    if not subject.is_active:
        raise AccountPolicyError(f"{subject.username} is inactive; reject this request")
    _roles_add(subject, [Role(r) for r in request.roles], by=actor.get_username())
    two_person_decide(request, actor=actor, status=TwoPersonStatus.APPROVED)
    _role_grant_record(AccountAction.ROLE_GRANT_APPROVED, actor=actor, request=request)
    return request


@transaction.atomic
def role_grant_reject(
    *, actor: User, request: RoleGrantRequest, comment: str = ""
) -> RoleGrantRequest:
    """Another administrator turns the request down (also once expired)."""
    request = two_person_reject(
        RoleGrantRequest, request.pk, actor=actor, comment=comment, related=("user",)
    )
    _role_grant_record(
        AccountAction.ROLE_GRANT_REJECTED, actor=actor, request=request, comment=comment
    )
    return request


@transaction.atomic
def role_grant_withdraw(*, actor: User, request: RoleGrantRequest) -> RoleGrantRequest:
    """The requester takes the request back."""
    request = two_person_withdraw(RoleGrantRequest, request.pk, actor=actor, related=("user",))
    _role_grant_record(AccountAction.ROLE_GRANT_WITHDRAWN, actor=actor, request=request)
    return request


def _administrator_removal_needs_approval(user: User) -> bool:
    """True if ``user`` is an active administrator and two or more administrators are
    active: taking the role from them, or deactivating them, waits for a second one."""
    return (
        user.is_active
        and user.groups.filter(name=Role.ADMINISTRATOR).exists()
        and role_grants_need_approval()
    )


def _administrator_removal_record(
    action: AccountAction,
    *,
    actor: User | None,
    request: AdministratorRemovalRequest,
    **details: object,
) -> None:
    audit_event_record(
        action=action,
        actor=actor,
        target=request.user,
        target_label=request.user.username,
        details={
            "request": request.pk,
            "change": request.change,
            "requested_by": request.requested_by_name,
            "reason": request.reason,
            **details,
        },
    )


ADMINISTRATOR_REMOVAL_REQUEST_TTL = timedelta(days=7)


def _administrator_removal_request(
    *, actor: User, user: User, change: str, reason: str
) -> AdministratorRemovalRequest:
    two_person_lapse(
        AdministratorRemovalRequest,
        user=user,
        related=("user",),
        record=lambda lapsed: _administrator_removal_record(
            AccountAction.ADMIN_REMOVAL_EXPIRED, actor=None, request=lapsed
        ),
    )
    if AdministratorRemovalRequest.objects.filter(
        user=user, status=TwoPersonStatus.PENDING
    ).exists():
        raise AccountPolicyError(
            f"demoting or deactivating {user.username} is already waiting for approval; "
            "approve, reject or withdraw that request first"
        )
    try:
        cleaned = two_person_reason(reason)
    except TwoPersonError as exc:
        raise AccountPolicyError(
            f"say why: {user.username} is an administrator, and with two or more "
            "administrators demoting or deactivating one waits for a second administrator, "
            "who reads your reason"
        ) from exc
    now = timezone.now()
    request = AdministratorRemovalRequest.objects.create(
        user=user,
        change=change,
        reason=cleaned,
        requested_by=actor,
        requested_by_name=actor_name(actor),
        requested_at=now,
        expires_at=now + ADMINISTRATOR_REMOVAL_REQUEST_TTL,
    )
    _administrator_removal_record(
        AccountAction.ADMIN_REMOVAL_REQUESTED,
        actor=actor,
        request=request,
        expires_at=request.expires_at.isoformat(),
    )
    return request


@transaction.atomic
def administrator_removal_approve(
    *, actor: User, request: AdministratorRemovalRequest
) -> AdministratorRemovalRequest:
    """A second administrator approves: the administrator role goes, or the account is
    deactivated, now. The subject may approve it (they consent); the requester may not, nor
    an approver who is not eligible (accounts.approvers), nor anyone once it expired. The
    last active administrator is never removed."""
    request = two_person_locked(AdministratorRemovalRequest, request.pk, related=("user",))
    two_person_check_not_requester(request, actor)
    approver_check(user=actor, permission=ROLE_GRANT_PERMISSION)
    two_person_check_unexpired(request)
    subject = User.objects.select_for_update().get(pk=request.user_id)
    is_administrator = subject.groups.filter(name=Role.ADMINISTRATOR).exists()
    if not subject.is_active or not is_administrator:
        raise AccountPolicyError(
            f"{subject.username} is no longer an active administrator; reject this request"
        )
    if _is_last_active_administrator(subject):
        raise AccountPolicyError(
            f"{subject.username} is the last active administrator and cannot be removed"
        )
    if request.change == AdministratorRemovalRequest.Change.DEMOTE:
        _roles_remove(subject, [Role.ADMINISTRATOR])
        audit_event_record(
            action=AuditAction.USER_ROLES_CHANGED,
            actor=actor,
            target=subject,
            target_label=subject.username,
            details={
                "removed": [Role.ADMINISTRATOR.value],
                "request": request.pk,
                "requested_by": request.requested_by_name,
            },
        )
    else:
        _deactivate(actor=actor, user=subject, request=request)
    two_person_decide(request, actor=actor, status=TwoPersonStatus.APPROVED)
    _administrator_removal_record(
        AccountAction.ADMIN_REMOVAL_APPROVED, actor=actor, request=request
    )
    return request


@transaction.atomic
def administrator_removal_reject(
    *, actor: User, request: AdministratorRemovalRequest, comment: str = ""
) -> AdministratorRemovalRequest:
    """Another administrator (or the subject) turns the request down (also once expired)."""
    request = two_person_reject(
        AdministratorRemovalRequest, request.pk, actor=actor, comment=comment, related=("user",)
    )
    _administrator_removal_record(
        AccountAction.ADMIN_REMOVAL_REJECTED, actor=actor, request=request, comment=comment
    )
    return request


@transaction.atomic
def administrator_removal_withdraw(
    *, actor: User, request: AdministratorRemovalRequest
) -> AdministratorRemovalRequest:
    """The requester takes the request back."""
    request = two_person_withdraw(
        AdministratorRemovalRequest, request.pk, actor=actor, related=("user",)
    )
    _administrator_removal_record(
        AccountAction.ADMIN_REMOVAL_WITHDRAWN, actor=actor, request=request
    )
    return request


def _deactivate(
    *, actor: User, user: User, request: AdministratorRemovalRequest | None = None
) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])
    audit_event_record(
        action=AuditAction.USER_DEACTIVATED,
        actor=actor,
        target=user,
        target_label=user.username,
        details={"request": request.pk, "requested_by": request.requested_by_name}
        if request
        else {},
    )


@transaction.atomic
def user_deactivate(
    *, actor: User, user: User, reason: str = ""
) -> AdministratorRemovalRequest | None:
    """Deactivate the user; their sessions stop working at their next request.

    While two or more administrators are active, deactivating an administrator is instead
    a request (with ``reason``) that a second administrator approves; it is returned.
    """
    if actor.pk == user.pk:
        raise AccountPolicyError("you cannot deactivate your own account")
    if not user.is_active:
        raise AccountPolicyError(f"{user.username} is already inactive")
    if user.groups.filter(name=Role.ADMINISTRATOR).exists() and _is_last_active_administrator(user):
        raise AccountPolicyError(
            f"{user.username} is the last active administrator and cannot be deactivated"
        )
    if _administrator_removal_needs_approval(user):
        return _administrator_removal_request(
            actor=actor,
            user=user,
            change=AdministratorRemovalRequest.Change.DEACTIVATE,
            reason=reason,
        )
    _deactivate(actor=actor, user=user)
    return None


@transaction.atomic
def user_reactivate(*, actor: User, user: User) -> None:
    """Let an inactive user sign in again."""
    if user.is_active:
        raise AccountPolicyError(f"{user.username} is already active")
    user.is_active = True
    user.save(update_fields=["is_active"])
    audit_event_record(
        action=AuditAction.USER_REACTIVATED, actor=actor, target=user, target_label=user.username
    )


@transaction.atomic
def user_password_reset(*, actor: User | None, user: User) -> str:
    """Replace another user's password with a one-time invitation link (returned, to be
    handed over once): the old password stops working and every session of the user ends
    at once; the person sets a new one themselves. Until they do, and for the cooling-off
    after, they cannot approve two-person requests."""
    if actor is not None and actor.pk == user.pk:
        raise AccountPolicyError("use Change password for your own account")
    # set_unusable_password changes the session auth hash, so every session of this user
    # is rejected at its next request (django.contrib.auth verifies the hash per request).
    user.set_unusable_password()
    user.save(update_fields=["password"])
    AccountSetup.objects.update_or_create(user=user, defaults={"password_chosen_at": None})
    audit_event_record(
        action=AuditAction.USER_PASSWORD_RESET,
        actor=actor,
        target=user,
        target_label=user.username,
        details={"invitation": True},
    )
    return invitation_issue(actor=actor, user=user, purpose=Invitation.Purpose.PASSWORD_RESET)
