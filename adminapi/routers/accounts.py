"""Accounts administration as the Users pages offer it (accounts.views, accounts.mfa_views).

Input is checked by the portal's own forms (UserCreateForm, UserRolesForm), so the API accepts
exactly what the pages accept. Nobody ever sets or sees a password: a new account and a
password reset answer a one-time invitation link (in that response only). Adding a role, once
two or more administrators are active, is a two-person request (202 with its id; a second
administrator decides it through /admin/approvals, kind ``role-grant``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from django.contrib.auth.models import User
from django.http import HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from accounts import invitations, mfa, selectors, services
from accounts.forms import UserCreateForm, UserRolesForm
from accounts.roles import Role, user_roles
from kmsportal.crypto.errors import KMSError

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import PathId

router = Router(tags=["Accounts"])

VIEW, ADD, CHANGE = "auth.view_user", "auth.add_user", "auth.change_user"
RULES: dict[str, Rule] = {
    "users_list": Rule((VIEW,), write=False),
    "users_get": Rule((VIEW,), write=False),
    "users_create": Rule((ADD,), write=True),
    "users_roles_set": Rule((CHANGE,), write=True),
    "users_deactivate": Rule((CHANGE,), write=True),
    "users_reactivate": Rule((CHANGE,), write=True),
    "users_password_reset": Rule((CHANGE,), write=True),
    "users_mfa_reset": Rule((CHANGE,), write=True),
}


class UserOut(Schema):
    id: int
    username: str
    email: str
    is_active: bool
    roles: list[str]
    date_joined: datetime
    last_login: datetime | None

    @staticmethod
    def from_user(user: User) -> UserOut:
        return UserOut(
            id=user.pk,
            username=user.username,
            email=user.email,
            is_active=user.is_active,
            roles=[r.value for r in user_roles(user)],
            date_joined=user.date_joined,
            last_login=user.last_login,
        )


class UserDetailOut(UserOut):
    mfa_required: bool
    mfa_enrolled_at: datetime | None
    pending_role_requests: list[int]


class UserFilter(Schema):
    q: str = Field("", max_length=150)
    status: str = Field("", max_length=16, description="active or inactive")
    role: str = Field("", max_length=32)


# Spelled out for the type checker; the assertion keeps it equal to the roles (in order).
RoleName = Literal["administrator", "key_custodian", "ca_operator", "auditor"]
assert get_args(RoleName) == tuple(Role.values)


class UserCreateIn(Schema):
    username: str = Field(min_length=1, max_length=150, pattern=r"^[\w.@+-]+$")
    email: str = Field("", max_length=254)
    roles: list[RoleName] = Field(min_length=1, max_length=4)
    reason: str = Field("", max_length=1000)


class InvitationOut(Schema):
    user: UserOut
    invitation_link: str = Field(description="hand it over once; shown in this response only")
    role_request_id: int | None = Field(
        default=None, description="the roles wait for a second administrator (/admin/approvals)"
    )


class RolesIn(Schema):
    roles: list[RoleName] = Field(min_length=1, max_length=4)
    reason: str = Field("", max_length=1000)


class RolesOut(Schema):
    user: UserOut
    removed: list[str]
    added: list[str]
    role_request_id: int | None = None
    removal_request_id: int | None = Field(
        default=None,
        description="removing the administrator role waits for a second administrator",
    )


class DeactivateIn(Schema):
    reason: str = Field(
        "",
        max_length=1000,
        description="required to deactivate an administrator while two or more are active",
    )


class DeactivateOut(UserOut):
    removal_request_id: int | None = Field(
        default=None, description="deactivating waits for a second administrator"
    )


def _subject(user_id: int) -> User:
    subject = User.objects.filter(pk=user_id).first()
    if subject is None:
        raise KMSError("no such user", code="not_found", status=404)
    return subject


def _form_errors(form: UserCreateForm | UserRolesForm) -> KMSError:
    errors = form.errors.get_json_data()
    detail = "; ".join(
        f"{field}: {item['message']}" for field, items in errors.items() for item in items
    )
    return KMSError(detail or "the request is not valid", code="validation_failed", status=422)


@router.get("/users", response=list[UserOut])
def users_list(request: ApiRequest, filters: Query[UserFilter]) -> list[UserOut]:
    """Users by name (search, status active/inactive, role)."""
    require(request, VIEW, write=False)
    users = selectors.user_list(
        user=request.user, search=filters.q, status=filters.status, role=filters.role
    )
    return [UserOut.from_user(u) for u in users[:500]]


@router.get("/users/{user_id}", response=UserDetailOut)
def users_get(request: ApiRequest, user_id: PathId) -> UserDetailOut:
    require(request, VIEW, write=False)
    subject = _subject(user_id)
    status = mfa.mfa_status(user=subject)
    return UserDetailOut(
        **UserOut.from_user(subject).dict(),
        mfa_required=status.required,
        mfa_enrolled_at=status.enrolled_at,
        pending_role_requests=list(
            subject.role_grant_requests.filter(status="pending").values_list("pk", flat=True)
        ),
    )


@router.post("/users", response={201: InvitationOut})
def users_create(
    request: ApiRequest, response: HttpResponse, body: UserCreateIn
) -> Status[InvitationOut]:
    """A new account without a password, and its one-time invitation link."""
    user = require(request, ADD, write=True)
    form = UserCreateForm(body.dict())
    if not form.is_valid():
        raise _form_errors(form)
    created = services.user_create(
        actor=user,
        username=form.cleaned_data["username"],
        email=form.cleaned_data["email"],
        roles=form.cleaned_data["roles"],
        reason=form.cleaned_data["reason"],
    )
    response["Cache-Control"] = "no-store"
    return Status(
        201,
        InvitationOut(
            user=UserOut.from_user(created.user),
            invitation_link=invitations.invitation_url(created.invitation_token),
            role_request_id=created.role_request.pk if created.role_request else None,
        ),
    )


@router.post("/users/{user_id}/roles", response={200: RolesOut, 202: RolesOut})
def users_roles_set(request: ApiRequest, body: RolesIn, user_id: PathId) -> Status[RolesOut]:
    """Make the user's roles exactly ``roles``: removals at once; additions at once or, with
    two or more active administrators, as a request a second administrator approves (202)."""
    user = require(request, CHANGE, write=True)
    subject = _subject(user_id)
    form = UserRolesForm(body.dict())
    if not form.is_valid():
        raise _form_errors(form)
    changed = services.user_roles_set(
        actor=user,
        user=subject,
        roles=form.cleaned_data["roles"],
        reason=form.cleaned_data["reason"],
    )
    subject.refresh_from_db()
    out = RolesOut(
        user=UserOut.from_user(subject),
        removed=[Role(r).value for r in changed.removed],
        added=[Role(r).value for r in changed.added],
        role_request_id=changed.request.pk if changed.request else None,
        removal_request_id=changed.removal_request.pk if changed.removal_request else None,
    )
    return Status(202 if changed.request or changed.removal_request else 200, out)


@router.post("/users/{user_id}/deactivate", response={200: DeactivateOut, 202: DeactivateOut})
def users_deactivate(
    request: ApiRequest, user_id: PathId, body: DeactivateIn | None = None
) -> Status[DeactivateOut]:
    """Deactivate the user; an administrator, while two or more are active, only as a
    request (with a reason) a second administrator approves (202)."""
    user = require(request, CHANGE, write=True)
    subject = _subject(user_id)
    waiting = services.user_deactivate(actor=user, user=subject, reason=body.reason if body else "")
    subject.refresh_from_db()
    out = DeactivateOut(
        **UserOut.from_user(subject).dict(), removal_request_id=waiting.pk if waiting else None
    )
    return Status(202 if waiting else 200, out)


@router.post("/users/{user_id}/reactivate", response=UserOut)
def users_reactivate(request: ApiRequest, user_id: PathId) -> UserOut:
    user = require(request, CHANGE, write=True)
    subject = _subject(user_id)
    services.user_reactivate(actor=user, user=subject)
    subject.refresh_from_db()
    return UserOut.from_user(subject)


@router.post("/users/{user_id}/password-reset", response=InvitationOut)
def users_password_reset(
    request: ApiRequest, response: HttpResponse, user_id: PathId
) -> InvitationOut:
    """End the user's password and sessions; a new invitation link, in this response only."""
    user = require(request, CHANGE, write=True)
    subject = _subject(user_id)
    token = services.user_password_reset(actor=user, user=subject)
    response["Cache-Control"] = "no-store"
    subject.refresh_from_db()
    return InvitationOut(
        user=UserOut.from_user(subject), invitation_link=invitations.invitation_url(token)
    )


@router.post("/users/{user_id}/mfa-reset", response=UserOut)
def users_mfa_reset(request: ApiRequest, user_id: PathId) -> UserOut:
    """Remove another user's authenticator (lost phone); they enrol anew at next sign-in."""
    user = require(request, CHANGE, write=True)
    subject = _subject(user_id)
    mfa.mfa_reset(actor=user, user=subject)
    return UserOut.from_user(subject)
