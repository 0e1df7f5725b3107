"""Grants name their operations: the service, the command and the portal form."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.roles import Role
from kmsportal.two_person import TwoPersonError
from tests.factories import sign_in
from vault import clients, refusals
from vault.models import ExportPolicy, Grant, GrantRequest

pytestmark = pytest.mark.django_db


def test_service_keeps_a_canonical_list_and_refuses_unsupported(service, make_key) -> None:
    key = make_key("orders")
    grant = clients.grant_create(
        actor=None, client=service, key=key, operations="decrypt, encrypt,encrypt"
    )
    assert grant.operations == "encrypt,decrypt"
    signer = make_key("signer", "ed25519")
    for operations in ("encrypt", "explode", ""):
        with pytest.raises(refusals.DistributionError):
            clients.grant_create(actor=None, client=service, key=signer, operations=operations)
    assert not Grant.objects.filter(key=signer).exists()


def test_default_grant_means_fetch(service, make_key) -> None:
    grant = clients.grant_create(actor=None, client=service, key=make_key("orders"))
    assert grant.operation_list == ["fetch"]


def test_command_takes_operations(service, make_key, make_user) -> None:
    """An operations-only grant releases no key material: one custodian makes it at once,
    whatever the export policy; a fetch grant still waits for a second custodian."""
    make_user("kim", Role.KEY_CUSTODIAN)
    make_key("orders")
    out = StringIO()
    call_command(
        "grant_create", "billing", "orders", "--actor", "kim", "--reason", "billing encrypts",
        "--operations", "encrypt,decrypt", stdout=out,
    )  # fmt: skip
    assert Grant.objects.get(key__name="orders").operations == "encrypt,decrypt"
    assert "no key material leaves" in out.getvalue()
    make_key("signer", "ecdsa-p256")
    with pytest.raises(CommandError, match="does not support encrypt"):
        call_command(
            "grant_create", "billing", "signer", "--actor", "kim", "--reason", "r",
            "--operations", "encrypt",
        )  # fmt: skip
    out = StringIO()
    call_command(
        "grant_create", "billing", "signer", "--actor", "kim", "--reason", "r",
        "--operations", "fetch,sign", stdout=out,
    )  # fmt: skip
    assert "must approve" in out.getvalue()
    assert not Grant.objects.filter(key__name="signer").exists()
    assert GrantRequest.objects.get(key__name="signer").operations == "fetch,sign"


def test_export_policy_never_allows_operations_but_not_fetch(service, make_key, make_user) -> None:
    from vault.approvals import grant_request_create

    kim = make_user("kim", Role.KEY_CUSTODIAN)
    key = make_key("sealed-in")
    key.export_policy = ExportPolicy.NEVER
    key.save()
    with pytest.raises(refusals.DistributionError, match="never"):
        clients.grant_create(actor=None, client=service, key=key, operations="fetch")
    with pytest.raises(TwoPersonError):
        grant_request_create(actor=kim, client=service, key=key, reason="r", operations="fetch")
    outcome = grant_request_create(
        actor=kim, client=service, key=key, reason="r", operations="encrypt,decrypt"
    )
    assert outcome.grant is not None and not outcome.grant.releases_key_material


def test_approving_a_fetch_grant_keeps_its_operations(service, make_key, make_user) -> None:
    from tests.factories import approver_make
    from vault.approvals import grant_request_approve, grant_request_create

    kim, lou = make_user("kim", Role.KEY_CUSTODIAN), approver_make("lou", Role.KEY_CUSTODIAN)
    key = make_key("shared")
    outcome = grant_request_create(
        actor=kim, client=service, key=key, reason="r", operations="fetch,encrypt"
    )
    assert outcome.request is not None
    grant = grant_request_approve(actor=lou, request=outcome.request)
    assert grant.operations == "fetch,encrypt"


def test_portal_form_sets_operations(service, make_key, make_user) -> None:
    make_key("orders")
    browser = sign_in(make_user("kim", Role.KEY_CUSTODIAN))
    response = browser.post(
        "/clients/billing/grants/",
        {
            "key": "orders",
            "operations": ["encrypt", "decrypt"],
            "versions": "primary",
            "reason": "billing encrypts invoices",
        },
    )
    assert response.status_code == 302
    assert Grant.objects.get(key__name="orders").operations == "encrypt,decrypt"
    page = browser.get("/clients/billing/")
    assert b"encrypt, decrypt" in page.content
