"""Issue 15: one key custodian alone cannot make key material leave the KMS.

The insider's path, through the real pages (Django's test client, signed in with password and
authenticator) and the real client library against the live server: register a client, grant
it the key, enroll with the token the page shows, fetch. It stops at the grant without a
second custodian and goes through with one, who approves on a confirmation page that names
the key, its fingerprint, the client and its certificate.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from accounts.roles import Role
from audit.models import AuditEvent
from kmsclient.client import enroll
from kmsportal.keyring.services import unseal
from tests.distribution.conftest import LiveKMS, refused
from tests.factories import approver_make, sign_in
from vault.models import Client, Grant, GrantRequest, KeyVersion, SymmetricKey

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def mallory(db) -> User:
    return approver_make("mallory", Role.KEY_CUSTODIAN)


@pytest.fixture
def trent(db) -> User:
    return approver_make("trent", Role.KEY_CUSTODIAN)


def material(key: SymmetricKey) -> bytes:
    version = KeyVersion.objects.get(key=key, is_primary=True)
    return unseal(bytes(version.sealed_material), aad=version.aad)


def register_and_request(kms: LiveKMS, page) -> tuple[str, GrantRequest]:
    """The insider's first steps: key, client (token from the page), grant request."""
    assert page.post("/keys/new/", {"name": "payroll"}).status_code == 302
    created = page.post(
        "/clients/new/", {"name": "exfil", "description": "totally legit"}, follow=True
    )
    token = re.search(rb'id="enrollment-token">([^<]+)<', created.content).group(1).decode()
    answer = page.post(
        "/clients/exfil/grants/",
        {"key": "payroll", "versions": "primary", "reason": "needed for the payroll run"},
        follow=True,
    )
    assert answer.status_code == 200
    assert b"a second key custodian must approve it" in answer.content
    return token, GrantRequest.objects.get()


def test_one_custodian_alone_cannot_exfiltrate_a_key_two_can(
    kms: LiveKMS, mallory: User, trent: User
) -> None:
    page = sign_in(mallory)
    token, asked = register_and_request(kms, page)
    key = SymmetricKey.objects.get(name="payroll")
    assert key.export_policy == "two-person"  # the default
    assert not Grant.objects.exists()

    # Mallory enrolls the client with the token the page showed them...
    enroll(kms.url, token, kms.root_file, kms.tmp_path / "exfil")
    client = kms.client_for("exfil")
    # ...and the fetch is refused: there is no grant, only a request.
    refused("no_grant", client.fetch_key, "payroll")

    # Mallory cannot approve their own request, not on the page, not by forging the POST.
    confirm = f"/approvals/grant/{asked.pk}/"
    own = page.get(confirm).content.decode()
    assert "You asked for this" in own and 'value="approve"' not in own
    forged = page.post(confirm, {"decision": "approve"}, follow=True)
    assert "a different person must approve it" in forged.content.decode()
    assert not Grant.objects.exists()
    refused("no_grant", client.fetch_key, "payroll")

    # Trent sees exactly what approving changes: the key, its fingerprint, the client and its
    # certificate, the versions.
    second = sign_in(trent)
    shown = second.get(confirm).content.decode()
    primary = KeyVersion.objects.get(key=key, is_primary=True)
    exfil = Client.objects.select_related("certificate").get(name="exfil")
    for fact in (
        "Grant key payroll to client exfil",
        "payroll",
        primary.fingerprint,
        "v1: fingerprint",
        "exfil",
        exfil.certificate.serial_number_display,
        exfil.certificate.subject,
        "needed for the payroll run",
        "mallory",
    ):
        assert fact in shown, fact
    assert 'value="approve"' in shown
    approved = second.post(confirm, {"decision": "approve"}, follow=True)
    assert b"exfil may now fetch payroll" in approved.content
    asked.refresh_from_db()
    assert (asked.status, asked.decided_by_name) == ("approved", "trent")

    # With the second custodian's approval the same client fetches the 32 bytes.
    assert client.fetch_key("payroll") == material(key)
    actions = list(
        AuditEvent.objects.filter(action__startswith="grant.").values_list("action", "actor_name")
    )
    assert ("grant.requested", "mallory") in actions
    assert ("grant.request_approved", "trent") in actions
    assert ("grant.created", "trent") in actions


def test_reenrolling_a_client_that_holds_grants_needs_a_second_custodian(
    kms: LiveKMS, mallory: User, trent: User
) -> None:
    page = sign_in(mallory)
    token, asked = register_and_request(kms, page)
    enroll(kms.url, token, kms.root_file, kms.tmp_path / "exfil")
    second = sign_in(trent)
    second.post(f"/approvals/grant/{asked.pk}/", {"decision": "approve"})
    assert Grant.objects.filter(client__name="exfil").exists()

    # A new token for a client holding the grant is a request, not a token...
    answer = page.post("/clients/exfil/token/", {"reason": "moved to a new host"}, follow=True)
    assert b'id="enrollment-token"' not in answer.content
    assert b"waits for a second key custodian" in answer.content
    request = Client.objects.get(name="exfil").reenrollment_requests.get()
    # ...which the approver decides on a page naming the client and the keys at stake.
    shown = second.get(f"/approvals/reenrollment/{request.pk}/").content.decode()
    assert "New enrollment token for client exfil" in shown and "payroll" in shown
    done = second.post(f"/approvals/reenrollment/{request.pk}/", {"decision": "approve"})
    assert done.status_code == 200 and "no-store" in done["Cache-Control"]
    new_token = re.search(rb'id="secret-once">([^<]+)<', done.content).group(1).decode()
    enroll(kms.url, new_token, kms.root_file, kms.tmp_path / "exfil-2")
    assert kms.client_for("exfil-2").fetch_key("payroll") == material(
        SymmetricKey.objects.get(name="payroll")
    )


def test_export_policy_never_single_and_weakening(kms: LiveKMS, mallory: User, trent: User) -> None:
    page = sign_in(mallory)
    assert page.post("/keys/new/", {"name": "root-secret"}).status_code == 302
    assert page.post("/keys/new/", {"name": "test-data"}).status_code == 302
    page.post("/clients/new/", {"name": "svc"})
    # Tightening applies at once.
    answer = page.post(
        "/keys/root-secret/export-policy/",
        {"policy": "never", "reason": "master secret, never leaves"},
        follow=True,
    )
    assert b"is now &#x27;never&#x27;" in answer.content
    grant = {"key": "root-secret", "versions": "primary", "reason": "please"}
    refused_page = page.post("/clients/svc/grants/", grant)
    assert refused_page.status_code == 400 and b"no client may fetch it" in refused_page.content
    assert not GrantRequest.objects.exists() and not Grant.objects.exists()

    # Weakening waits for a second custodian, who sees the old and the new policy.
    answer = page.post(
        "/keys/test-data/export-policy/",
        {"policy": "single", "reason": "synthetic test data only"},
        follow=True,
    )
    assert b"waits for a second key custodian" in answer.content
    assert SymmetricKey.objects.get(name="test-data").export_policy == "two-person"
    policy_request = SymmetricKey.objects.get(name="test-data").export_policy_requests.get()
    # The key page shows what waits, linked to its confirmation page.
    key_page = page.get("/keys/test-data/").content.decode()
    assert f"/approvals/export-policy/{policy_request.pk}/" in key_page
    confirm = f"/approvals/export-policy/{policy_request.pk}/"
    assert b"single custodian" in sign_in(trent).get(confirm).content
    refused_own = page.post(confirm, {"decision": "approve"}, follow=True)
    assert b"a different person must approve it" in refused_own.content
    second = sign_in(trent)
    second.post(confirm, {"decision": "approve"})
    assert SymmetricKey.objects.get(name="test-data").export_policy == "single"
    # Now one custodian grants it alone.
    page.post("/clients/svc/grants/", {"key": "test-data", "versions": "primary", "reason": "ci"})
    assert Grant.objects.filter(key__name="test-data", client__name="svc").exists()


def test_an_unused_token_of_an_enrolled_client_is_shown_and_voided_when_its_grant_is_approved(
    kms: LiveKMS, mallory: User, trent: User
) -> None:
    """The insider's detour: a legitimate, enrolled client holds no grant, so a new token for
    it comes at once. Mallory takes one, asks for a grant, and would re-enroll the client with
    a key of their own once Trent approved the certificate he saw. Trent sees the token on
    the confirmation page, and approving voids it: Mallory's re-enrollment fails."""
    second = sign_in(trent)
    assert second.post("/keys/new/", {"name": "payroll"}).status_code == 302
    created = second.post("/clients/new/", {"name": "billing"}, follow=True)
    genuine = re.search(rb'id="enrollment-token">([^<]+)<', created.content).group(1).decode()
    enroll(kms.url, genuine, kms.root_file, kms.tmp_path / "billing")
    billing = kms.client_for("billing")

    page = sign_in(mallory)
    answer = page.post("/clients/billing/token/", {"reason": "moving hosts"}, follow=True)
    stolen = re.search(rb'id="enrollment-token">([^<]+)<', answer.content).group(1).decode()
    page.post(
        "/clients/billing/grants/",
        {"key": "payroll", "versions": "primary", "reason": "billing needs payroll"},
    )
    asked = GrantRequest.objects.get()

    confirm = f"/approvals/grant/{asked.pk}/"
    shown = second.get(confirm).content.decode()
    assert "Unused enrollment token" in shown
    assert "issued to mallory" in shown and "approving voids it" in shown
    approved = second.post(confirm, {"decision": "approve"}, follow=True)
    assert b"unused enrollment token was voided" in approved.content
    assert not Client.objects.get(name="billing").has_unused_token

    # Mallory's token no longer enrolls anything; the genuine client fetches as before.
    refused("invalid_token", enroll, kms.url, stolen, kms.root_file, kms.tmp_path / "mal")
    assert billing.fetch_key("payroll") == material(SymmetricKey.objects.get(name="payroll"))
    voided = AuditEvent.objects.get(action="client.token_voided")
    assert voided.actor_name == "trent" and voided.details["issued_to"] == "mallory"
