"""The confirmation page of a key destruction lists what approving changes and who loses
the key; a request needs a reason; nothing is approved from the inbox."""

from __future__ import annotations

import pytest

from tests.factories import sign_in
from vault import clients, server_identity, services
from vault.lifecycle import KeyState
from vault.models import KeyVersion

pytestmark = pytest.mark.django_db


def test_the_destruction_confirmation_names_versions_clients_and_grants(
    custodian, second_custodian
) -> None:
    key = services.symmetric_key_create(actor=None, name="payroll")
    services.symmetric_key_rotate(actor=None, key=key)
    server_identity.distribution_bootstrap()
    for name in ("billing", "reporting"):
        client, _ = clients.client_create(actor=None, name=name)
        clients.grant_create(actor=None, client=client, key=key, versions="all")
    page = sign_in(custodian)
    blank = page.post("/keys/payroll/destroy/", {"waiting_days": "7", "reason": "  "})
    assert blank.status_code == 400 and not key.destruction_requests.exists()
    page.post("/keys/payroll/destroy/", {"waiting_days": "7", "reason": "payroll moved to HSM"})
    request = key.destruction_requests.get()
    inbox = sign_in(second_custodian).get("/keys/approvals/").content.decode()
    assert f"/approvals/destruction/{request.pk}/" in inbox
    assert f"/keys/approvals/{request.pk}/approve/" not in inbox  # no one-click approval

    approver = sign_in(second_custodian)
    shown = approver.get(f"/approvals/destruction/{request.pk}/").content.decode()
    for version in KeyVersion.objects.filter(key=key):
        assert version.fingerprint in shown
    for fact in (
        "Destroy key payroll",
        "7 days after approval",
        "billing (every version that may decrypt)",
        "reporting (every version that may decrypt)",
        "payroll moved to HSM",
        "kim-custodian",
    ):
        assert fact in shown, fact
    approver.post(f"/approvals/destruction/{request.pk}/", {"decision": "approve"})
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DESTRUCTION
    # The decided request's page still shows what was decided, with no buttons.
    after = approver.get(f"/approvals/destruction/{request.pk}/").content.decode()
    assert "approved" in after and 'value="approve"' not in after


def test_grant_requests_are_rejected_withdrawn_and_expire_without_a_grant(
    custodian, second_custodian
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from kmsportal.two_person import TwoPersonError
    from vault import approvals
    from vault.models import Grant, GrantRequest

    key = services.symmetric_key_create(actor=None, name="payroll")
    server_identity.distribution_bootstrap()
    client, _ = clients.client_create(actor=None, name="billing")

    def ask() -> GrantRequest:
        return approvals.grant_request_create(
            actor=custodian, client=client, key=key, reason="billing"
        ).request

    with pytest.raises(TwoPersonError, match="needs a reason"):
        approvals.grant_request_create(actor=custodian, client=client, key=key, reason=" ")
    first = ask()
    with pytest.raises(TwoPersonError, match="already waiting"):
        ask()
    with pytest.raises(TwoPersonError, match="withdraw it instead"):
        approvals.grant_request_reject(actor=custodian, request=first)
    approvals.grant_request_reject(actor=second_custodian, request=first, comment="who is billing?")
    second = ask()
    with pytest.raises(TwoPersonError, match="only kim-custodian"):
        approvals.grant_request_withdraw(actor=second_custodian, request=second)
    approvals.grant_request_withdraw(actor=custodian, request=second)
    third = ask()
    GrantRequest.objects.filter(pk=third.pk).update(expires_at=timezone.now() - timedelta(1))
    with pytest.raises(TwoPersonError, match="expired"):
        approvals.grant_request_approve(actor=second_custodian, request=third)
    with pytest.raises(TwoPersonError, match="already rejected"):
        approvals.grant_request_approve(actor=second_custodian, request=first)
    assert not Grant.objects.exists()
    statuses = dict(GrantRequest.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "rejected", second.pk: "withdrawn", third.pk: "pending"}
    # Asking again lapses the expired one, visibly and audited.
    fourth = ask()
    statuses = dict(GrantRequest.objects.values_list("pk", "status"))
    assert (statuses[third.pk], statuses[fourth.pk]) == ("expired", "pending")
    from audit.models import AuditEvent

    expired = AuditEvent.objects.get(action="grant.request_expired")
    assert expired.details["request"] == third.pk and expired.actor_type == "system"
