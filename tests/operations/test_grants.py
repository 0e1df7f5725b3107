"""Grants name their operations: the service, the command and the portal form."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.roles import Role
from tests.factories import sign_in
from vault import distribution
from vault.models import Grant

pytestmark = pytest.mark.django_db


def test_service_keeps_a_canonical_list_and_refuses_unsupported(service, make_key) -> None:
    key = make_key("orders")
    grant = distribution.grant_create(
        actor=None, client=service, key=key, operations="decrypt, encrypt,encrypt"
    )
    assert grant.operations == "encrypt,decrypt"
    signer = make_key("signer", "ed25519")
    for operations in ("encrypt", "explode", ""):
        with pytest.raises(distribution.DistributionError):
            distribution.grant_create(actor=None, client=service, key=signer, operations=operations)
    assert not Grant.objects.filter(key=signer).exists()


def test_default_grant_means_fetch(service, make_key) -> None:
    grant = distribution.grant_create(actor=None, client=service, key=make_key("orders"))
    assert grant.operation_list == ["fetch"]


def test_command_takes_operations(service, make_key) -> None:
    make_key("orders")
    out = StringIO()
    call_command("grant_create", "billing", "orders", "--operations", "encrypt,decrypt", stdout=out)
    assert Grant.objects.get(key__name="orders").operations == "encrypt,decrypt"
    assert "encrypt,decrypt" in out.getvalue()
    make_key("signer", "ecdsa-p256")
    with pytest.raises(CommandError, match="does not support encrypt"):
        call_command("grant_create", "billing", "signer", "--operations", "encrypt")


def test_portal_form_sets_operations(service, make_key, make_user) -> None:
    make_key("orders")
    browser = sign_in(make_user("kim", Role.KEY_CUSTODIAN))
    response = browser.post(
        "/clients/billing/grants/",
        {"key": "orders", "operations": ["encrypt", "decrypt"], "versions": "primary"},
    )
    assert response.status_code == 302
    assert Grant.objects.get(key__name="orders").operations == "encrypt,decrypt"
    page = browser.get("/clients/billing/")
    assert b"encrypt, decrypt" in page.content
