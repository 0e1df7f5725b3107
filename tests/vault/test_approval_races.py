"""Two custodians racing to approve the same grant request: it is approved once, one grant.

The approval locks the request row first (kmsportal.two_person.two_person_locked); the
second approver waits for the first to commit and then finds the request decided.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from accounts.roles import Role
from kmsportal.two_person import TwoPersonError
from tests.factories import approver_make
from vault import approvals, clients, services
from vault.models import Grant, GrantRequest


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_racing_approvers_approve_a_grant_once() -> None:
    asker = approver_make("kim", Role.KEY_CUSTODIAN)
    approvers = [approver_make(f"approver-{i}", Role.KEY_CUSTODIAN) for i in range(4)]
    key = services.symmetric_key_create(actor=None, name="payroll")
    client, _token = clients.client_create(actor=None, name="billing")
    asked = approvals.grant_request_create(
        actor=asker, client=client, key=key, reason="billing reads payroll"
    ).request
    assert asked is not None
    barrier = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def approve(user) -> None:
        try:
            barrier.wait(timeout=60)
            approvals.grant_request_approve(actor=user, request=asked)
            outcomes.append("approved")
        except TwoPersonError as exc:
            outcomes.append(str(exc))
        except BaseException as exc:  # pragma: no cover - reported below
            outcomes.append(f"unexpected: {exc!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert outcomes.count("approved") == 1, outcomes
    assert all("already approved" in o for o in outcomes if o != "approved"), outcomes
    assert Grant.objects.filter(client=client, key=key).count() == 1
    assert GrantRequest.objects.get(pk=asked.pk).status == "approved"
