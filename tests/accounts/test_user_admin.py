"""Administrator pages: create, roles, deactivate, reset password, and the guards."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Invitation
from accounts.roles import Role, user_roles
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db

NAV_LINKS = {"Users": b'href="/users/"'}


@pytest.mark.parametrize(
    ("role", "sees_users"),
    [
        (Role.ADMINISTRATOR, True),
        (Role.AUDITOR, True),
        (Role.KEY_CUSTODIAN, False),
        (Role.CA_OPERATOR, False),
    ],
)
def test_each_role_sees_only_its_navigation(role_client, role: Role, sees_users: bool) -> None:
    page = role_client(role).get("/")
    assert page.status_code == 200
    assert (NAV_LINKS["Users"] in page.content) is sees_users
    assert role.label.encode() in page.content


@pytest.mark.parametrize("role", [Role.KEY_CUSTODIAN, Role.CA_OPERATOR])
def test_roles_without_user_permissions_get_403(role_client, role: Role) -> None:
    client = role_client(role)
    assert client.get("/users/").status_code == 403
    assert client.get("/users/new/").status_code == 403


def test_auditor_reads_users_but_cannot_change_them(role_client, make_user) -> None:
    client = role_client(Role.AUDITOR)
    target = make_user("erin", Role.KEY_CUSTODIAN)
    assert client.get("/users/").status_code == 200
    page = client.get(f"/users/{target.pk}/")
    assert page.status_code == 200
    assert b"Save roles" not in page.content
    assert client.get("/users/new/").status_code == 403
    response = client.post(
        "/users/new/",
        {"username": "mallory", "roles": ["administrator"], "password_mode": "random"},
    )
    assert response.status_code == 403
    assert not User.objects.filter(username="mallory").exists()
    assert (
        client.post(f"/users/{target.pk}/roles/", {"roles": ["administrator"]}).status_code == 403
    )
    assert client.post(f"/users/{target.pk}/deactivate/").status_code == 403
    assert client.post(f"/users/{target.pk}/password/").status_code == 403
    target.refresh_from_db()
    assert target.is_active
    assert user_roles(target) == [Role.KEY_CUSTODIAN]


def invitation_path(response) -> str:
    link = re.search(rb'id="invitation-link">([^<]+)<', response.content).group(1).decode()
    assert link.startswith("http://testserver/accounts/invitation/")
    return link.removeprefix("http://testserver")


def test_create_user_hands_over_an_invitation_link_never_a_password(
    signed_in, admin_user: User
) -> None:
    client = signed_in(admin_user)
    response = client.post(
        "/users/new/",
        {
            "username": "frank",
            "email": "frank@example.org",
            "roles": ["key_custodian", "auditor"],
            # An administrator trying to set the password: there is no such field any more.
            "password_mode": "set",
            "password1": "admin knows this 123",
            "password2": "admin knows this 123",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    path = invitation_path(response)
    frank = User.objects.get(username="frank")
    assert user_roles(frank) == [Role.KEY_CUSTODIAN, Role.AUDITOR]
    assert not frank.has_usable_password()
    assert not Client().login(username="frank", password="admin knows this 123")
    # The link is shown in that one response only.
    assert path.encode() not in client.get(f"/users/{frank.pk}/").content
    # Frank chooses his password (validated), once.
    weak = Client().post(path, {"new_password1": "12345678", "new_password2": "12345678"})
    assert weak.status_code == 400
    chosen = "frank's own long passphrase"
    done = Client().post(path, {"new_password1": chosen, "new_password2": chosen})
    assert done.status_code == 302 and done["Location"] == "/accounts/login/"
    assert Client().login(username="frank", password=chosen)
    again = Client().post(
        path, {"new_password1": "another passphrase 1", "new_password2": "another passphrase 1"}
    )
    assert again.status_code == 404
    assert Client().login(username="frank", password=chosen)


def test_an_expired_invitation_does_not_work(signed_in, admin_user: User, settings) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import Invitation

    response = signed_in(admin_user).post(
        "/users/new/", {"username": "late", "roles": ["auditor"]}, follow=True
    )
    path = invitation_path(response)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    chosen = "too late for this one"
    assert (
        Client().post(path, {"new_password1": chosen, "new_password2": chosen}).status_code == 404
    )
    assert not User.objects.get(username="late").has_usable_password()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"username": "", "roles": ["auditor"], "password_mode": "random"},
            b"This field is required",
        ),
        (
            {"username": "bad name!", "roles": ["auditor"], "password_mode": "random"},
            b"Enter a valid username",
        ),
        ({"username": "hank", "roles": [], "password_mode": "random"}, b"This field is required"),
        (
            {"username": "hank", "roles": ["superuser"], "password_mode": "random"},
            b"not one of the available choices",
        ),
        (
            {"username": "alice-admin", "roles": ["auditor"], "password_mode": "random"},
            b"already exists",
        ),
    ],
)
def test_bad_input_when_creating_a_user_changes_nothing(
    signed_in, admin_user: User, data: dict, message: bytes
) -> None:
    before = User.objects.count()
    response = signed_in(admin_user).post("/users/new/", data)
    assert response.status_code == 400
    assert message in response.content
    assert User.objects.count() == before


def test_change_roles(signed_in, admin_user: User, make_user) -> None:
    target = make_user("ivan", Role.AUDITOR)
    response = signed_in(admin_user).post(f"/users/{target.pk}/roles/", {"roles": ["ca_operator"]})
    assert response.status_code == 302
    assert user_roles(target) == [Role.CA_OPERATOR]


def test_user_cannot_change_own_roles(signed_in, admin_user: User, make_user) -> None:
    make_user("second-admin", Role.ADMINISTRATOR)
    client = signed_in(admin_user)
    response = client.post(f"/users/{admin_user.pk}/roles/", {"roles": ["auditor"]}, follow=True)
    assert b"cannot change your own roles" in response.content
    assert user_roles(admin_user) == [Role.ADMINISTRATOR]


def test_guard_refuses_removing_the_last_administrator(make_user) -> None:
    from accounts import services

    admin = make_user("solo", Role.ADMINISTRATOR)
    # A custodian given the change permission directly (not via a role) still cannot
    # remove the last administrator: the guard is in the service, not in the page.
    actor = make_user("operator", Role.KEY_CUSTODIAN)
    with pytest.raises(services.AccountPolicyError, match="last active administrator"):
        services.user_roles_set(actor=actor, user=admin, roles=[Role.AUDITOR])
    with pytest.raises(services.AccountPolicyError, match="last active administrator"):
        services.user_deactivate(actor=actor, user=admin)
    admin.refresh_from_db()
    assert admin.is_active
    assert user_roles(admin) == [Role.ADMINISTRATOR]


def test_last_administrator_guard_through_the_page(signed_in, make_user) -> None:
    from django.contrib.auth.models import Permission

    admin = make_user("solo", Role.ADMINISTRATOR)
    actor = make_user("delegate", Role.AUDITOR)
    actor.user_permissions.add(Permission.objects.get(codename="change_user"))
    client = signed_in(actor)
    response = client.post(f"/users/{admin.pk}/deactivate/", follow=True)
    assert b"last active administrator" in response.content
    response = client.post(f"/users/{admin.pk}/roles/", {"roles": ["auditor"]}, follow=True)
    assert b"last active administrator" in response.content
    admin.refresh_from_db()
    assert admin.is_active and user_roles(admin) == [Role.ADMINISTRATOR]


def test_deactivate_confirmation_then_user_is_signed_out(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("judy", Role.AUDITOR)
    target_client = signed_in(target)
    admin = signed_in(admin_user)
    confirm = admin.get(f"/users/{target.pk}/deactivate/")
    assert confirm.status_code == 200 and b"Deactivate judy?" in confirm.content
    assert admin.post(f"/users/{target.pk}/deactivate/").status_code == 302
    target.refresh_from_db()
    assert not target.is_active
    assert target_client.get("/").status_code == 302  # their open session no longer works
    assert admin.post(f"/users/{target.pk}/reactivate/").status_code == 302
    target.refresh_from_db()
    assert target.is_active


def test_admin_cannot_deactivate_self(signed_in, admin_user: User, make_user) -> None:
    make_user("backup-admin", Role.ADMINISTRATOR)
    response = signed_in(admin_user).post(f"/users/{admin_user.pk}/deactivate/", follow=True)
    assert b"cannot deactivate your own account" in response.content
    admin_user.refresh_from_db()
    assert admin_user.is_active


def test_password_reset_ends_sessions_and_hands_over_a_new_invitation(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("ken", Role.AUDITOR)
    target_client = signed_in(target)
    admin = signed_in(admin_user)
    assert b"invitation link" in admin.get(f"/users/{target.pk}/password/").content
    response = admin.post(f"/users/{target.pk}/password/", follow=True)
    assert response.status_code == 200
    path = invitation_path(response)
    assert target_client.get("/").status_code == 302  # the old session ended
    assert not Client().login(username="ken", password=TEST_PASSWORD)
    chosen = "ken's brand new passphrase"
    assert (
        Client().post(path, {"new_password1": chosen, "new_password2": chosen}).status_code == 302
    )
    assert Client().login(username="ken", password=chosen)


def gone_page_says_how_to_get_a_new_link(response, subject: User) -> None:
    assert response.status_code == 410
    assert b'id="invitation-link"' not in response.content
    assert b"was shown once" in response.content
    assert b"Reset password (new invitation link)" in response.content
    assert f'href="/users/{subject.pk}/password/"'.encode() in response.content


def test_reloading_the_new_users_link_page_explains_instead_of_creating_again(
    signed_in, admin_user: User
) -> None:
    admin = signed_in(admin_user)
    created = admin.post("/users/new/", {"username": "nora", "roles": ["auditor"]})
    # Post/Redirect/Get: the POST answers with a redirect, never with the link itself.
    assert created.status_code == 302 and b"invitation" not in created.content
    shown = admin.get(created["Location"])
    path = invitation_path(shown)
    nora = User.objects.get(username="nora")
    assert b"User nora created" in shown.content
    # Shown, the secret is gone from the session (only the token's hash stays, in its table).
    assert "one_time_secrets" not in admin.session
    token = path.rsplit("token=", 1)[-1]
    assert token.encode() not in repr(dict(admin.session)).encode()
    # A reload: the link is not shown again, the page says how to get a new one, and
    # nothing is created or reset a second time.
    reloaded = admin.get(created["Location"])
    gone_page_says_how_to_get_a_new_link(reloaded, nora)
    assert token.encode() not in reloaded.content
    assert User.objects.filter(username__iexact="nora").count() == 1
    assert Invitation.objects.filter(user=nora).count() == 1
    # The link still works (the reload voided nothing).
    chosen = "nora's own long passphrase"
    assert (
        Client().post(path, {"new_password1": chosen, "new_password2": chosen}).status_code == 302
    )
    # Posting the form again (back button, resubmit) is refused with the way forward too.
    again = admin.post("/users/new/", {"username": "nora", "roles": ["auditor"]})
    assert again.status_code == 400
    assert b"already exists" in again.content
    assert b"Reset password (new invitation link)" in again.content


def test_reloading_the_reset_link_page_does_not_reset_again(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("otto", Role.AUDITOR)
    admin = signed_in(admin_user)
    reset = admin.post(f"/users/{target.pk}/password/")
    assert reset.status_code == 302
    assert reset["Location"].startswith(f"/users/{target.pk}/invitation/")
    shown = admin.get(reset["Location"])
    path = invitation_path(shown)
    assert b"Password of otto reset" in shown.content
    assert "one_time_secrets" not in admin.session
    invitations = list(Invitation.objects.filter(user=target).values_list("pk", "voided_at"))
    reloaded = admin.get(reset["Location"])
    gone_page_says_how_to_get_a_new_link(reloaded, target)
    # No second reset: the same one invitation, still valid, and its link still works.
    assert list(Invitation.objects.filter(user=target).values_list("pk", "voided_at")) == (
        invitations
    )
    chosen = "otto's own long passphrase"
    assert (
        Client().post(path, {"new_password1": chosen, "new_password2": chosen}).status_code == 302
    )


def test_another_administrator_cannot_pick_up_a_waiting_link(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("pia", Role.AUDITOR)
    reset = signed_in(admin_user).post(f"/users/{target.pk}/password/")
    other = signed_in(make_user("other-admin", Role.ADMINISTRATOR))
    gone_page_says_how_to_get_a_new_link(other.get(reset["Location"]), target)


def test_unknown_user_is_404(signed_in, admin_user: User) -> None:
    assert signed_in(admin_user).get("/users/99999/").status_code == 404


def test_the_user_list_filters_by_status_and_role(admin_user, make_user, signed_in) -> None:
    from accounts import services as account_services

    make_user("kim-custodian", Role.KEY_CUSTODIAN)
    gone = make_user("lee-custodian", Role.KEY_CUSTODIAN)
    make_user("ann-auditor", Role.AUDITOR)
    account_services.user_deactivate(actor=admin_user, user=gone)
    client = signed_in(admin_user)

    def names(query: str) -> list[str]:
        response = client.get(f"/users/?{query}")
        assert response.status_code == 200
        return [user.username for user in response.context["users"]]

    assert names("status=inactive") == ["lee-custodian"]
    assert names("status=active") == ["alice-admin", "ann-auditor", "kim-custodian"]
    # Role counts on the dashboard are of active holders, and so is the filter.
    assert names("role=key_custodian") == ["kim-custodian"]
    assert names("role=auditor&q=ann") == ["ann-auditor"]
    # An unknown value filters nothing out rather than failing.
    assert len(names("role=wizard&status=maybe")) == 4


def test_a_username_differing_only_by_spelling_is_refused(signed_in, admin_user: User) -> None:
    client = signed_in(admin_user)
    for spelling in ("ALICE-ADMIN", " alice-admin ", "\uff41lice-admin"):
        response = client.post("/users/new/", {"username": spelling, "roles": ["auditor"]})
        assert response.status_code == 400, spelling
        assert (
            b"already exists" in response.content or b"Enter a valid username" in response.content
        )
    assert User.objects.count() == 1
