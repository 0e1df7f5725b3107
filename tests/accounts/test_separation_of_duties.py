"""Issue 15: administrators cannot manufacture approvers; privileged roles need two admins.

An account an administrator creates cannot approve anything until its holder has set their
own password (invitation), enrolled their own authenticator and passed the cooling-off; once
two administrators exist, a role grant waits for the second one.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.approvers import ApproverNotEligible, approver_refusal
from accounts.models import (
    AccountSetup,
    AdministratorRemovalRequest,
    MfaDevice,
    RoleAssignment,
    RoleGrantRequest,
)
from accounts.roles import Role, user_roles
from audit.models import AuditEvent
from kmsportal.two_person import TwoPersonError
from tests.factories import TEST_PASSWORD, approver_make, mfa_enroll, sign_in
from vault import services as vault_services
from vault.lifecycle import KeyState

pytestmark = pytest.mark.django_db

DESTROY = "vault.destroy_symmetrickey"


def invitation_of(response) -> str:
    link = re.search(rb'id="invitation-link">http://testserver([^<]+)<', response.content)
    return link.group(1).decode()


def test_the_default_cooling_off_is_24_hours(monkeypatch, tmp_path) -> None:
    """Without KMS_APPROVER_COOLING_OFF in the environment the settings say 24 hours (the
    tests' conftest sets 0 on top of them; a `make run` trial file, not read here, a minute)."""
    import importlib

    monkeypatch.delenv("KMS_APPROVER_COOLING_OFF", raising=False)
    monkeypatch.setenv("KMS_DATA_DIR", str(tmp_path))  # no trial.env there
    import kmsportal.settings as module

    assert importlib.reload(module).KMS_APPROVER_COOLING_OFF == 24 * 60 * 60


def test_an_administrator_made_account_cannot_approve_until_its_holder_set_it_up(
    settings,
) -> None:
    settings.KMS_APPROVER_COOLING_OFF = 24 * 60 * 60
    admin = approver_make("root-admin", Role.ADMINISTRATOR)
    requester = approver_make("kim", Role.KEY_CUSTODIAN)
    # Both accounts are old enough: move their history a day and a bit back.
    old = timezone.now() - timedelta(days=2)
    for user in (admin, requester):
        User.objects.filter(pk=user.pk).update(date_joined=old)
        AccountSetup.objects.filter(user=user).update(password_chosen_at=old)
        MfaDevice.objects.filter(user=user).update(confirmed_at=old)
        RoleAssignment.objects.filter(user=user).update(granted_at=old)
    key = vault_services.symmetric_key_create(actor=None, name="payroll")
    request = vault_services.destruction_request_create(
        actor=requester, key=key, waiting_days=7, reason="retired"
    )

    # The administrator creates a custodian through the page: a link, no password.
    page = sign_in(admin)
    created = page.post(
        "/users/new/", {"username": "sock-puppet", "roles": ["key_custodian"]}, follow=True
    )
    path = invitation_of(created)
    puppet = User.objects.get(username="sock-puppet")
    assert user_roles(puppet) == [Role.KEY_CUSTODIAN]  # one administrator: applies at once

    # Not set up: no password of their own.
    assert "has not chosen their own password" in approver_refusal(user=puppet, permission=DESTROY)
    with pytest.raises(ApproverNotEligible, match="has not chosen their own password"):
        vault_services.destruction_request_approve(actor=puppet, request=request)

    # Whoever opens the link (even the administrator) sets the password...
    Client().post(path, {"new_password1": TEST_PASSWORD, "new_password2": TEST_PASSWORD})
    puppet.refresh_from_db()
    assert "has not enrolled their own authenticator" in approver_refusal(
        user=puppet, permission=DESTROY
    )
    # ...and the authenticator: still the cooling-off, counted from the newest of them.
    mfa_enroll(puppet)
    refusal = approver_refusal(user=puppet, permission=DESTROY)
    assert refusal.startswith("cooling-off:") and "24 hours" in refusal
    with pytest.raises(ApproverNotEligible, match="cooling-off"):
        vault_services.destruction_request_approve(actor=puppet, request=request)
    # The confirmation page says why, and offers no Approve button.
    shown = sign_in(puppet).get(f"/approvals/destruction/{request.pk}/").content.decode()
    assert "You cannot approve this yet: cooling-off" in shown
    assert 'value="approve"' not in shown
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE

    # A day later (every moment moved back), the holder of the account may approve.
    for model, field in (
        (User, "date_joined"),
        (AccountSetup, "password_chosen_at"),
        (MfaDevice, "confirmed_at"),
        (RoleAssignment, "granted_at"),
    ):
        where = {"pk": puppet.pk} if model is User else {"user": puppet}
        model.objects.filter(**where).update(**{field: old})
    puppet.refresh_from_db()
    assert approver_refusal(user=puppet, permission=DESTROY) is None
    vault_services.destruction_request_approve(actor=puppet, request=request)
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DESTRUCTION


def test_a_password_reset_takes_the_account_back_to_not_eligible(make_user) -> None:
    admin = make_user("admin-one", Role.ADMINISTRATOR)
    custodian = approver_make("kim", Role.KEY_CUSTODIAN)
    assert approver_refusal(user=custodian, permission=DESTROY) is None
    services.user_password_reset(actor=admin, user=custodian)
    custodian.refresh_from_db()
    assert "has not chosen their own password" in approver_refusal(
        user=custodian, permission=DESTROY
    )


def test_with_two_administrators_a_role_grant_waits_for_the_second(make_user) -> None:
    first = approver_make("ada", Role.ADMINISTRATOR)
    page = sign_in(first)
    # One administrator (the bootstrap phase): a second administrator is made at once.
    made = page.post(
        "/users/new/",
        {"username": "bob", "roles": ["administrator"], "reason": "second admin"},
        follow=True,
    )
    bob = User.objects.get(username="bob")
    assert user_roles(bob) == [Role.ADMINISTRATOR]
    Client().post(
        invitation_of(made),
        {"new_password1": TEST_PASSWORD, "new_password2": TEST_PASSWORD},
    )
    mfa_enroll(bob)

    # Two administrators now: roles for a new user wait, and need a reason.
    refused = page.post("/users/new/", {"username": "carol", "roles": ["key_custodian"]})
    assert (
        refused.status_code == 400 and b"Say why" in refused.content
    )  # errors start with a capital
    assert not User.objects.filter(username="carol").exists()
    made = page.post(
        "/users/new/",
        {"username": "carol", "roles": ["key_custodian"], "reason": "new custodian for payroll"},
        follow=True,
    )
    assert b"wait for a second administrator" in made.content
    carol = User.objects.get(username="carol")
    assert user_roles(carol) == []
    asked = RoleGrantRequest.objects.get(user=carol)
    assert asked.roles == ["key_custodian"]
    # Adding a role to an existing user waits too; removing one does not.
    target = make_user("dave", Role.AUDITOR)
    page.post(
        f"/users/{target.pk}/roles/", {"roles": ["ca_operator"], "reason": "moves to the PKI team"}
    )
    assert user_roles(target) == []  # auditor removed at once, CA operator waiting
    waiting = RoleGrantRequest.objects.get(user=target)
    detail = page.get(f"/users/{target.pk}/").content.decode()
    assert f"/approvals/role-grant/{waiting.pk}/" in detail and "ca_operator" in detail

    # The requester cannot approve; the second administrator does, on the confirmation page.
    confirm = f"/approvals/role-grant/{asked.pk}/"
    forged = page.post(confirm, {"decision": "approve"}, follow=True)
    assert b"a different person must approve it" in forged.content
    assert user_roles(carol) == []
    second_page = sign_in(bob)
    shown = second_page.get(confirm).content.decode()
    for fact in (
        "Grant Key custodian to carol",
        "Key custodian",
        "not yet (invitation not accepted)",
        "new custodian for payroll",
    ):
        assert fact in shown, fact
    second_page.post(confirm, {"decision": "approve"})
    assert user_roles(carol) == [Role.KEY_CUSTODIAN]
    second_page.post(
        f"/approvals/role-grant/{waiting.pk}/", {"decision": "reject", "comment": "no"}
    )
    assert user_roles(target) == []
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "user.role_grant_requested",
        "user.role_grant_approved",
        "user.role_grant_rejected",
    } <= actions


def test_nobody_approves_their_own_role_grant(make_user) -> None:
    first = approver_make("ada", Role.ADMINISTRATOR)
    second = approver_make("bob", Role.ADMINISTRATOR)
    third = approver_make("cyd", Role.AUDITOR)
    changed = services.user_roles_set(
        actor=first, user=third, roles=[Role.AUDITOR, Role.ADMINISTRATOR], reason="on call"
    )
    assert changed.request is not None
    with pytest.raises(Exception, match="different person"):
        services.role_grant_approve(actor=first, request=changed.request)
    services.role_grant_approve(actor=second, request=changed.request)
    assert Role.ADMINISTRATOR in user_roles(third)


def _active_administrators() -> set[str]:
    return set(
        User.objects.filter(is_active=True, groups__name=Role.ADMINISTRATOR).values_list(
            "username", flat=True
        )
    )


@pytest.mark.parametrize("how", ["demote", "deactivate"])
def test_one_administrator_cannot_remove_the_other_to_grant_roles_alone(how: str) -> None:
    """The attack: with two administrators, A demotes or deactivates B (so role grants apply at
    once), makes custodians, then restores B. Removing B waits for a second administrator;
    with B's (or another administrator's) approval it happens."""
    ada = approver_make("ada", Role.ADMINISTRATOR)
    bob = approver_make("bob", Role.ADMINISTRATOR)
    page = sign_in(ada)
    if how == "demote":
        path, form = f"/users/{bob.pk}/roles/", {"roles": ["auditor"]}
    else:
        path, form = f"/users/{bob.pk}/deactivate/", {}

    # Without a reason: refused, nothing changes.
    refused = page.post(path, form, follow=True)
    assert b"Say why" in refused.content or b"say why" in refused.content
    assert _active_administrators() == {"ada", "bob"}
    assert not AdministratorRemovalRequest.objects.exists()

    # With a reason: a request; B stays an active administrator.
    asked = page.post(path, {**form, "reason": "bob leaves the team"}, follow=True)
    assert b"waits for a second administrator" in asked.content
    assert _active_administrators() == {"ada", "bob"}
    request = AdministratorRemovalRequest.objects.get(user=bob, status="pending")
    assert request.change == how

    # So A still cannot mint an approver alone: the new custodian's role waits.
    page.post(
        "/users/new/",
        {"username": "puppet", "roles": ["key_custodian"], "reason": "more hands"},
    )
    puppet = User.objects.get(username="puppet")
    assert user_roles(puppet) == []
    assert RoleGrantRequest.objects.get(user=puppet).status == "pending"
    # A's own approval of the removal is refused, on the confirmation page and the service.
    confirm = f"/approvals/administrator-removal/{request.pk}/"
    forged = page.post(confirm, {"decision": "approve"}, follow=True)
    assert b"a different person must approve it" in forged.content
    with pytest.raises(TwoPersonError, match="different person"):
        services.administrator_removal_approve(actor=ada, request=request)
    assert _active_administrators() == {"ada", "bob"}
    # A second removal request for B is refused while this one waits.
    again = page.post(path, {**form, "reason": "again"}, follow=True)
    assert b"already waiting for approval" in again.content

    # B sees what changes, and approves: now it happens (two people agreed).
    second = sign_in(bob)
    shown = second.get(confirm).content.decode()
    for fact in ("bob leaves the team", "Active administrators after", "apply at once"):
        assert fact in shown, fact
    second.post(confirm, {"decision": "approve"})
    assert _active_administrators() == {"ada"}
    request.refresh_from_db()
    assert request.status == "approved" and request.decided_by_name == "bob"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"user.admin_removal_requested", "user.admin_removal_approved"} <= actions


def test_an_administrator_removal_is_rejected_withdrawn_and_expires_audited() -> None:
    ada = approver_make("ada", Role.ADMINISTRATOR)
    bob = approver_make("bob", Role.ADMINISTRATOR)
    cyd = approver_make("cyd", Role.ADMINISTRATOR)
    first = services.user_deactivate(actor=ada, user=bob, reason="left")
    assert first is not None
    services.administrator_removal_reject(actor=cyd, request=first, comment="he did not")
    second = services.user_deactivate(actor=ada, user=bob, reason="left, really")
    assert second is not None
    services.administrator_removal_withdraw(actor=ada, request=second)
    third = services.user_deactivate(actor=ada, user=bob, reason="left, truly")
    assert third is not None
    AdministratorRemovalRequest.objects.filter(pk=third.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(TwoPersonError, match="expired"):
        services.administrator_removal_approve(actor=cyd, request=third)
    # A new request lapses the old one, visibly and audited.
    fourth = services.user_deactivate(actor=ada, user=bob, reason="once more")
    third.refresh_from_db()
    assert third.status == "expired"
    services.administrator_removal_approve(actor=cyd, request=fourth)
    bob.refresh_from_db()
    assert not bob.is_active
    actions = list(
        AuditEvent.objects.filter(action__startswith="user.admin_removal").values_list(
            "action", flat=True
        )
    )
    for action in ("rejected", "withdrawn", "expired", "approved"):
        assert f"user.admin_removal_{action}" in actions


def test_a_new_role_on_an_old_account_starts_the_cooling_off(settings) -> None:
    """An account past every other moment gains a role that lets it approve: it waits out the
    cooling-off from that grant (accounts.approvers), not from when it was created."""
    settings.KMS_APPROVER_COOLING_OFF = 24 * 60 * 60
    admin = approver_make("root-admin", Role.ADMINISTRATOR)
    requester = approver_make("kim", Role.KEY_CUSTODIAN)
    veteran = approver_make("vera", Role.AUDITOR)
    old = timezone.now() - timedelta(days=30)
    for user in (admin, requester, veteran):
        User.objects.filter(pk=user.pk).update(date_joined=old)
        AccountSetup.objects.filter(user=user).update(password_chosen_at=old)
        MfaDevice.objects.filter(user=user).update(confirmed_at=old)
        RoleAssignment.objects.filter(user=user).update(granted_at=old)
    veteran.refresh_from_db()
    assert "needs the vault.destroy_symmetrickey permission" in approver_refusal(
        user=veteran, permission=DESTROY
    )
    key = vault_services.symmetric_key_create(actor=None, name="payroll")
    request = vault_services.destruction_request_create(
        actor=requester, key=key, waiting_days=7, reason="retired"
    )

    # One administrator: the key custodian role applies at once, through the user page.
    sign_in(admin).post(
        f"/users/{veteran.pk}/roles/", {"roles": ["auditor", "key_custodian"], "reason": "on call"}
    )
    veteran = User.objects.get(pk=veteran.pk)  # fresh permission cache
    assert user_roles(veteran) == [Role.KEY_CUSTODIAN, Role.AUDITOR]
    refusal = approver_refusal(user=veteran, permission=DESTROY)
    assert refusal.startswith("cooling-off: the role that lets them approve was granted less")
    shown = sign_in(veteran).get(f"/approvals/destruction/{request.pk}/").content.decode()
    assert "You cannot approve this yet: cooling-off" in shown
    with pytest.raises(ApproverNotEligible, match="cooling-off"):
        vault_services.destruction_request_approve(actor=veteran, request=request)

    # A day after the grant, vera may approve.
    RoleAssignment.objects.filter(user=veteran, role=Role.KEY_CUSTODIAN).update(
        granted_at=timezone.now() - timedelta(hours=25)
    )
    assert approver_refusal(user=veteran, permission=DESTROY) is None
    vault_services.destruction_request_approve(actor=veteran, request=request)
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DESTRUCTION
