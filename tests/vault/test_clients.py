"""Client services, enrollment and grants: pages, API edge cases and commands."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.crypto import protocol
from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
from pki.models import CertificateStatus
from vault import clients, server_identity, services
from vault.models import Client, Delivery, Grant, GrantRequest, RefusalTally

pytestmark = pytest.mark.django_db


@pytest.fixture
def server() -> None:
    server_identity.distribution_bootstrap()


@pytest.fixture
def custodian(make_user, signed_in) -> HttpClient:
    return signed_in(make_user("kc-one", Role.KEY_CUSTODIAN))


def enroll(token: str, client: HttpClient | None = None, csr: str | None = None):
    key = generate_private_key("ecp256")
    if csr is None:
        csr = build_csr(private_key=key, subject=parse_subject("CN=anything")).decode()
    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr)
    response = (client or HttpClient()).post(
        "/api/v1/enroll", json.dumps(body), content_type="application/json"
    )
    return response, key


def test_register_enroll_grant_fetch(server, custodian: HttpClient) -> None:
    created = custodian.post("/clients/new/", {"name": "billing", "description": "billing svc"})
    assert created.status_code == 302  # Post/Redirect/Get: a reload never posts again
    response = custodian.get(created["Location"])
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    token = re.search(rb'id="enrollment-token">([^<]+)<', response.content).group(1).decode()
    page = response.content.decode()
    root = server_identity.root_ca()
    assert root.fingerprint_sha256 in page  # the root to pin, and the command to run
    assert "kmsclient enroll --url http://testserver --token=-" in page
    # A reload: the token is gone for good, and the page says how to get a new one.
    reloaded = custodian.get(created["Location"])
    assert reloaded.status_code == 410 and token.encode() not in reloaded.content
    assert b"New enrollment token for billing" in reloaded.content
    client = Client.objects.get(name="billing")
    assert token not in client.enrollment_token_hash  # stored only as a hash
    assert token.encode() not in custodian.get("/clients/billing/").content

    answer, key = enroll(token)
    assert answer.status_code == 201
    body = answer.json()
    assert body["client"] == "billing" and "BEGIN CERTIFICATE" in body["certificate"]
    client.refresh_from_db()
    assert client.certificate is not None and client.certificate.profile == "kms-client"
    # Single use.
    again, _ = enroll(token)
    assert again.status_code == 401 and again.json()["code"] == "invalid_token"

    symmetric = services.symmetric_key_create(actor=None, name="orders-db")
    # A low-sensitivity key: one custodian grants it alone (tests/vault/test_exfiltration.py
    # has the default policy, where a second custodian must approve).
    symmetric.__class__.objects.filter(pk=symmetric.pk).update(export_policy="single")
    response = custodian.post(
        "/clients/billing/grants/", {"key": "orders-db", "versions": "all", "reason": "billing"}
    )
    assert response.status_code == 302
    grant = Grant.objects.get(client=client)
    assert grant.versions == "all"

    request, state = protocol.build_fetch_request(
        key_name="orders-db",
        version=None,
        group="x25519",
        client_certificate_pem=body["certificate"],
        client_private_key=key,
    )
    fetched = HttpClient().post(
        "/api/v1/keys/fetch", json.dumps(request), content_type="application/json"
    )
    assert fetched.status_code == 200
    reply = fetched.json()
    leaf = protocol.server_leaf_certificate(reply)
    opened = protocol.open_fetch_response(
        state=state, response=reply, trusted_server_public_key=leaf.public_key()
    )
    assert opened.version == 1 and len(opened.material) == 32
    assert Delivery.objects.filter(client=client, key=symmetric, version=1).count() == 1
    page = custodian.get("/clients/billing/")
    assert b"orders-db" in page.content and b"x25519" in page.content

    # The impact list of the key names the client once that version is compromised.
    services.key_version_compromise(actor=None, key=symmetric, number=1, reason="leak")
    assert b"Compromise impact" in custodian.get("/keys/orders-db/").content
    assert b'href="/clients/billing/"' in custodian.get("/keys/orders-db/").content


def test_expired_token_and_bad_csr(server) -> None:
    client, token = clients.client_create(actor=None, name="late")
    Client.objects.filter(pk=client.pk).update(
        enrollment_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    response, _ = enroll(token)
    assert response.status_code == 401 and response.json()["code"] == "expired_token"

    client2, token2 = clients.client_create(actor=None, name="garbage")
    response, _ = enroll(token2, csr="not a csr")
    assert response.status_code == 400 and response.json()["code"] == "bad_csr"
    client2.refresh_from_db()
    assert client2.certificate is None and client2.enrollment_token_hash  # token not spent
    # An enrollment request carries no timestamp: whoever saw one refused can replay it at
    # will. Counted for the source with the enrollment it named, not one event each.
    assert not AuditEvent.objects.filter(action="client.enrollment_refused").exists()
    tally = RefusalTally.objects.get()
    assert tally.codes == {"expired_token": 1, "bad_csr": 1}
    assert set(tally.targets) == {
        f"client late, token id {protocol.enrollment_token_keys(token)[0][:8]}",
        f"client garbage, token id {protocol.enrollment_token_keys(token2)[0][:8]}",
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_request"),
        (b"[]", 400, "malformed_request"),
        (json.dumps({"key_name": "x"}).encode(), 400, "malformed_request"),
        (b"x" * (65 * 1024), 413, "request_too_large"),
    ],
)
def test_fetch_bad_bodies(server, body: bytes, status: int, code: str) -> None:
    response = HttpClient().post("/api/v1/keys/fetch", body, content_type="application/json")
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_api_is_post_only_and_needs_no_csrf_cookie(server) -> None:
    assert HttpClient().get("/api/v1/keys/fetch").status_code == 405
    strict = HttpClient(enforce_csrf_checks=True)
    response = strict.post("/api/v1/keys/fetch", b"{}", content_type="application/json")
    assert response.status_code == 400  # judged by its signature, not a CSRF cookie


def test_client_state_pages(server, custodian: HttpClient) -> None:
    client, _ = clients.client_create(actor=None, name="svc")
    assert custodian.get("/clients/svc/suspend/").status_code == 200
    assert custodian.post("/clients/svc/suspend/").status_code == 302
    client.refresh_from_db()
    assert client.state == "suspended"
    assert custodian.post("/clients/svc/resume/").status_code == 302
    response = custodian.post("/clients/svc/revoke/", {"reason": "nonsense"})
    assert response.status_code == 400
    assert (
        custodian.post("/clients/svc/revoke/", {"reason": "affiliationChanged"}).status_code == 302
    )
    client.refresh_from_db()
    assert client.state == "revoked"
    response = custodian.post("/clients/svc/resume/", follow=True)
    assert b"is revoked; it cannot become active" in response.content


def test_revoking_an_enrolled_client_revokes_its_certificate(server) -> None:
    client, token = clients.client_create(actor=None, name="gone")
    assert enroll(token)[0].status_code == 201
    client.refresh_from_db()
    clients.client_revoke(actor=None, client=client, reason="keyCompromise")
    client.certificate.refresh_from_db()
    assert client.certificate.status == CertificateStatus.REVOKED


def test_new_token_page_and_grant_errors(server, custodian: HttpClient) -> None:
    clients.client_create(actor=None, name="svc2")
    assert custodian.post("/clients/svc2/token/").status_code == 400  # a reason is required
    # No grants yet: the token is issued at once.
    response = custodian.post("/clients/svc2/token/", {"reason": "new host"}, follow=True)
    assert b'id="enrollment-token"' in response.content
    response = custodian.post(
        "/clients/svc2/grants/", {"key": "no-such-key", "versions": "primary", "reason": "x"}
    )
    assert response.status_code == 400 and b"No key with this name" in response.content
    k1 = services.symmetric_key_create(actor=None, name="k1")
    k1.__class__.objects.filter(pk=k1.pk).update(export_policy="single")
    grant = {"key": "k1", "versions": "primary", "reason": "svc2 reads k1"}
    custodian.post("/clients/svc2/grants/", grant)
    response = custodian.post("/clients/svc2/grants/", grant)
    assert response.status_code == 400 and b"already has a grant" in response.content
    grant = Grant.objects.get()
    assert custodian.post(f"/clients/svc2/grants/{grant.pk}/withdraw/").status_code == 302
    grant.refresh_from_db()
    assert grant.withdrawn_at is not None


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMINISTRATOR])
def test_readers_see_clients_but_cannot_act(role_client, role: Role, server) -> None:
    clients.client_create(actor=None, name="svc3")
    client = role_client(role)
    assert client.get("/clients/").status_code == 200
    assert client.get("/clients/svc3/").status_code == 200
    assert client.get("/clients/new/").status_code == 403
    assert client.post("/clients/new/", {"name": "x"}).status_code == 403
    for action in ["suspend", "resume", "revoke", "token"]:
        assert client.post(f"/clients/svc3/{action}/").status_code == 403
    assert client.post("/clients/svc3/grants/", {"key": "k"}).status_code == 403


def test_ca_operator_sees_no_clients(role_client, server) -> None:
    client = role_client(Role.CA_OPERATOR)
    assert client.get("/clients/").status_code == 403


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_commands(server, make_user) -> None:
    out = run("client_create", "payments", "--description", "payments svc")
    assert re.search(r"Enrollment token \(shown once.*\): \S+", out)
    cards = services.symmetric_key_create(actor=None, name="cards")
    make_user("kc", Role.KEY_CUSTODIAN)
    make_user("reader", Role.AUDITOR)
    who = ("--actor", "kc", "--reason", "payments charges cards")
    # The default export policy: the command asks; a second custodian approves in the portal.
    asked = run("grant_create", "payments", "cards", *who)
    assert "A second key custodian must approve it in the portal" in asked
    assert not Grant.objects.exists()
    with pytest.raises(CommandError, match="already waiting"):
        run("grant_create", "payments", "cards", *who)
    with pytest.raises(CommandError, match="required: --actor"):
        run("grant_create", "payments", "cards", "--reason", "x")
    with pytest.raises(CommandError, match=r"lacks the vault\.add_grant permission"):
        run("grant_create", "payments", "cards", "--actor", "reader", "--reason", "x")
    GrantRequest.objects.update(status="withdrawn")
    cards.__class__.objects.filter(pk=cards.pk).update(export_policy="single")
    assert "Granted cards (every version that may decrypt) to payments" in run(
        "grant_create", "payments", "cards", "--versions", "all", *who
    )
    with pytest.raises(CommandError, match="already has a grant"):
        run("grant_create", "payments", "cards", *who)
    with pytest.raises(CommandError, match="no client named 'nobody'"):
        run("grant_create", "nobody", "cards", *who)
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        run("grant_create", "payments", "cards", "--expires", "soon", *who)
    with pytest.raises(CommandError, match="already exists"):
        run("client_create", "payments")
    assert "Revoked client payments" in run(
        "client_revoke", "payments", "--reason", "affiliationChanged"
    )
    assert "Issued kms-server certificate" in run("server_cert_renew")
