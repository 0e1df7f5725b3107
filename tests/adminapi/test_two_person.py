"""Two-person rules hold through the API as in the portal: nobody approves their own
request, deciding needs the kind's permission, and an approver must be eligible."""

from __future__ import annotations

from accounts.roles import Role
from tests.factories import approver_make
from vault import clients, services
from vault.models import Grant, SymmetricKey

from .conftest import bearer

JSON = "application/json"


def test_a_fetch_grant_waits_for_a_second_custodian(make_user) -> None:
    alice = bearer(approver_make("alice", Role.KEY_CUSTODIAN))
    bob_user = approver_make("bob", Role.KEY_CUSTODIAN)
    bob = bearer(bob_user)
    admin = bearer(approver_make("root-admin", Role.ADMINISTRATOR))
    services.symmetric_key_create(actor=None, name="payroll")
    clients.client_create(actor=None, name="billing")

    asked = alice.post(
        "/api/v1/admin/clients/billing/grants",
        {"key": "payroll", "operations": ["fetch", "decrypt"], "reason": "billing needs it"},
        content_type=JSON,
    )
    assert asked.status_code == 202, asked.content
    request_id = asked.json()["request_id"]
    assert not Grant.objects.exists()
    inbox = bob.get("/api/v1/admin/approvals?kind=grant").json()
    assert [(r["kind"], r["id"]) for r in inbox] == [("grant", request_id)]
    page = bob.get(f"/api/v1/admin/approvals/grant/{request_id}").json()
    assert page["may_decide"] and page["approver_refusal"] is None
    assert any(f["label"] == "Key" for f in page["changes"])

    own = alice.post(f"/api/v1/admin/approvals/grant/{request_id}/approve")
    assert own.status_code == 409 and own.json()["code"] == "two_person_rule"
    not_custodian = admin.post(f"/api/v1/admin/approvals/grant/{request_id}/approve")
    assert not_custodian.status_code == 403
    assert not_custodian.json()["code"] == "permission_denied"
    read_only = bearer(bob_user, scope="read-only")
    refused = read_only.post(f"/api/v1/admin/approvals/grant/{request_id}/approve")
    assert refused.status_code == 403 and refused.json()["code"] == "read_only_token"
    assert not Grant.objects.exists()

    approved = bob.post(f"/api/v1/admin/approvals/grant/{request_id}/approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["request"]["status"] == "approved"
    grant = Grant.objects.get()
    assert set(grant.operation_list) == {"fetch", "decrypt"}
    again = bob.post(f"/api/v1/admin/approvals/grant/{request_id}/approve")
    assert again.status_code == 409  # decided already: nothing changes twice


def test_an_operations_only_grant_is_one_persons_action(make_user) -> None:
    alice = bearer(make_user("alice", Role.KEY_CUSTODIAN))
    services.symmetric_key_create(actor=None, name="payroll")
    clients.client_create(actor=None, name="billing")
    made = alice.post(
        "/api/v1/admin/clients/billing/grants",
        {"key": "payroll", "operations": ["encrypt"], "reason": "encrypt only"},
        content_type=JSON,
    )
    assert made.status_code == 201 and made.json()["grant"]["operations"] == ["encrypt"]


def test_destruction_needs_a_second_custodian(make_user) -> None:
    alice = bearer(approver_make("alice", Role.KEY_CUSTODIAN))
    bob = bearer(make_user("bob", Role.KEY_CUSTODIAN))  # no authenticator: not eligible
    carol = bearer(approver_make("carol", Role.KEY_CUSTODIAN))
    services.symmetric_key_create(actor=None, name="old")
    asked = alice.post(
        "/api/v1/admin/keys/old/destruction",
        {"waiting_days": 7, "reason": "retired"},
        content_type=JSON,
    )
    assert asked.status_code == 202, asked.content
    path = f"/api/v1/admin/approvals/destruction/{asked.json()['request_id']}"
    own = alice.post(f"{path}/approve")  # as for every two-person kind
    assert (own.status_code, own.json()["code"]) == (409, "two_person_rule")
    assert "different key custodian" in own.json()["detail"]
    ineligible = bob.post(f"{path}/approve")
    assert (ineligible.status_code, ineligible.json()["code"]) == (403, "approver_not_eligible")
    assert "authenticator" in ineligible.json()["detail"]
    assert SymmetricKey.objects.get(name="old").state == "active"
    assert carol.post(f"{path}/approve").status_code == 200
    assert SymmetricKey.objects.get(name="old").destroy_after is not None  # scheduled


def test_a_privileged_role_grant_waits_for_a_second_administrator(make_user) -> None:
    first = approver_make("admin-one", Role.ADMINISTRATOR)
    second = approver_make("admin-two", Role.ADMINISTRATOR)
    target = make_user("newcomer", Role.AUDITOR)
    one, two = bearer(first), bearer(second)
    asked = one.post(
        f"/api/v1/admin/accounts/users/{target.pk}/roles",
        {"roles": ["auditor", "key_custodian"], "reason": "joins the key team"},
        content_type=JSON,
    )
    assert asked.status_code == 202, asked.content
    request_id = asked.json()["role_request_id"]
    assert asked.json()["user"]["roles"] == ["auditor"]
    own = one.post(f"/api/v1/admin/approvals/role-grant/{request_id}/approve")
    assert own.status_code == 409
    custodian = bearer(approver_make("kc", Role.KEY_CUSTODIAN))
    assert (
        custodian.post(f"/api/v1/admin/approvals/role-grant/{request_id}/approve").status_code
        == 403
    )
    approved = two.post(f"/api/v1/admin/approvals/role-grant/{request_id}/approve")
    assert approved.status_code == 200, approved.content
    target.refresh_from_db()
    assert set(target.groups.values_list("name", flat=True)) == {"auditor", "key_custodian"}


def test_the_requester_withdraws_and_another_rejects(make_user) -> None:
    alice = bearer(approver_make("alice", Role.KEY_CUSTODIAN))
    bob = bearer(approver_make("bob", Role.KEY_CUSTODIAN))
    for name in ("one", "two"):
        services.symmetric_key_create(actor=None, name=name)
    first = alice.post("/api/v1/admin/keys/one/destruction", {"reason": "x"}, content_type=JSON)
    second = alice.post("/api/v1/admin/keys/two/destruction", {"reason": "y"}, content_type=JSON)
    one = f"/api/v1/admin/approvals/destruction/{first.json()['request_id']}"
    two = f"/api/v1/admin/approvals/destruction/{second.json()['request_id']}"
    assert bob.post(f"{one}/withdraw").status_code in (400, 409)  # only the requester
    assert alice.post(f"{one}/withdraw").json()["request"]["status"] == "withdrawn"
    rejected = bob.post(f"{two}/reject", {"comment": "still used"}, content_type=JSON)
    assert rejected.status_code == 200 and rejected.json()["request"]["status"] == "rejected"


def test_deactivating_an_administrator_waits_for_a_second_administrator(make_user) -> None:
    first = approver_make("admin-one", Role.ADMINISTRATOR)
    second = approver_make("admin-two", Role.ADMINISTRATOR)
    one, two = bearer(first), bearer(second)
    path = f"/api/v1/admin/accounts/users/{second.pk}/deactivate"
    for body in ("", "{}"):  # no body at all, or no reason in it
        blank = one.post(path, body, content_type=JSON)
        assert (blank.status_code, blank.json()["code"]) == (409, "account_policy")
        assert "say why" in blank.json()["detail"]
    asked = one.post(path, {"reason": "leaves the company"}, content_type=JSON)
    assert asked.status_code == 202, asked.content
    assert asked.json()["is_active"] is True
    request_id = asked.json()["removal_request_id"]
    own = one.post(f"/api/v1/admin/approvals/administrator-removal/{request_id}/approve")
    assert own.status_code == 409
    second.refresh_from_db()
    assert second.is_active
    # The subject consents: two people agreed.
    approved = two.post(f"/api/v1/admin/approvals/administrator-removal/{request_id}/approve")
    assert approved.status_code == 200, approved.content
    second.refresh_from_db()
    assert not second.is_active
    # Anyone else (and an administrator once fewer than two are active) goes at once.
    auditor = make_user("audra", Role.AUDITOR)
    done = one.post(f"/api/v1/admin/accounts/users/{auditor.pk}/deactivate", "", content_type=JSON)
    assert done.status_code == 200, done.content
    assert (done.json()["is_active"], done.json()["removal_request_id"]) == (False, None)
