"""The key fetch's hot path (issue 9): a bounded number of queries and transactions, and
per-process caches that never stand in for what the database decides.

Requests are built and answered in-process (`exchange.key_fetch`, the service behind
`POST /api/v1/keys/fetch`), with real cryptography and the real database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto import protocol
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    build_certificate,
    build_csr,
    certificate_to_pem,
    generate_private_key,
    get_profile,
    parse_san,
    parse_subject,
)
from pki.services import certificate_revoke
from vault import clients, exchange, refusals, server_identity, services
from vault.models import Client, Delivery, RefusalTally, ReplayNonce

pytestmark = pytest.mark.django_db

#: One successful fetch: the certificate with its CA (pki.selectors), the client holding it
#: (vault's own query: one more than before issue 20, when vault joined pki's tables); the
#: nonce; on PostgreSQL the key row lock; grant, key, version and server identity; the delivery; the audit event
#: (chain head, event, head update); the transaction's and the audit event's savepoints or
#: BEGIN/COMMIT. (19 to 20 before issue 9.) The nonce store's pruning, 1 request in 100,
#: adds one; the test below turns it off. Plus the client's rate counter in the shared
#: `counters` table (kmsportal.counters, issue 15): a read and a write, in the nonce's
#: transaction (issue 13: the request is charged only once it is known to be new).
MAX_QUERIES_PER_FETCH = 17


@dataclass
class Enrolled:
    client: Client
    certificate_pem: str
    private_key: Any

    def request(self, key_name: str = "orders-db", version: int | None = None) -> dict[str, Any]:
        body, _state = protocol.build_fetch_request(
            key_name=key_name,
            version=version,
            client_certificate_pem=self.certificate_pem,
            client_private_key=self.private_key,
        )
        return body


@pytest.fixture
def enrolled() -> Enrolled:
    server_identity.distribution_bootstrap()
    client, token = clients.client_create(actor=None, name="billing")
    key = generate_private_key("ecp256")
    csr = build_csr(private_key=key, subject=parse_subject("CN=billing"))
    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr.decode())
    answer = clients.client_enroll_response(body=body)
    client.refresh_from_db()
    return Enrolled(client, answer["certificate"], key)


@pytest.fixture
def granted(enrolled: Enrolled) -> Enrolled:
    key = services.symmetric_key_create(actor=None, name="orders-db")
    clients.grant_create(actor=None, client=enrolled.client, key=key)
    return enrolled


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(refusals.FetchRefused) as caught:
        exchange.key_fetch(body=body)
    return caught.value.code


def test_a_fetch_costs_a_bounded_number_of_queries(
    granted: Enrolled, django_assert_max_num_queries, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange.secrets, "randbelow", lambda n: n - 1)  # no pruning
    exchange.key_fetch(body=granted.request())  # caches warm, as in a running server
    for _ in range(3):
        with django_assert_max_num_queries(MAX_QUERIES_PER_FETCH):
            answer = exchange.key_fetch(body=granted.request())
        assert answer["version"] == 1
    assert Delivery.objects.filter(client=granted.client).count() == 4
    assert AuditEvent.objects.filter(action="key.delivered").count() == 4


def test_a_fetch_writes_the_nonce_then_the_delivery_with_its_audit_event(
    granted: Enrolled,
) -> None:
    with CaptureQueriesContext(connection) as queries:
        exchange.key_fetch(body=granted.request())
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("INSERT") and "kms_counters" not in q["sql"]
    ]
    # The nonce (committed with the rate counter, before anything can refuse the request in
    # the client's name), then the ledger row and the audit event in one transaction.
    assert len(writes) == 3
    assert ReplayNonce.objects.count() == 1


def test_old_nonces_are_pruned_now_and_then(
    granted: Enrolled, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange.key_fetch(body=granted.request())
    ReplayNonce.objects.update(seen_at=timezone.now() - timedelta(minutes=20))
    monkeypatch.setattr(exchange.secrets, "randbelow", lambda n: 0)  # this one prunes
    exchange.key_fetch(body=granted.request())
    assert ReplayNonce.objects.count() == 1  # the fresh one only


def test_a_refused_request_still_spends_its_nonce(enrolled: Enrolled) -> None:
    body = enrolled.request()
    assert refusal(body) == "no_grant"  # the nonce was committed before the refusal...
    key = services.symmetric_key_create(actor=None, name="orders-db")
    clients.grant_create(actor=None, client=enrolled.client, key=key)
    assert refusal(body) == "replayed_request"  # ...so its replay is one
    assert not Delivery.objects.exists()
    # The refusal is the client's; the replay is anyone's: tallied, not in its name.
    codes = [e.details["code"] for e in AuditEvent.objects.filter(action="key.fetch_refused")]
    assert codes == ["no_grant"]
    assert RefusalTally.objects.get().codes == {"replayed_request": 1}


def test_a_replay_of_a_suspended_clients_request_is_not_judged_again(
    enrolled: Enrolled,
) -> None:
    clients.client_suspend(actor=None, client=enrolled.client)
    body = enrolled.request()
    assert refusal(body) == "client_suspended"
    assert refusal(body) == "replayed_request"
    codes = [e.details["code"] for e in AuditEvent.objects.filter(action="key.fetch_refused")]
    assert codes == ["client_suspended"]


def test_the_cached_certificate_never_hides_a_revocation(granted: Enrolled) -> None:
    for _ in range(2):
        exchange.key_fetch(body=granted.request())  # parsed and verified once, cached
    clients.client_suspend(actor=None, client=granted.client)
    assert refusal(granted.request()) == "client_suspended"
    clients.client_resume(actor=None, client=granted.client)
    exchange.key_fetch(body=granted.request())
    certificate_revoke(actor=None, certificate=granted.client.certificate, reason="keyCompromise")
    assert refusal(granted.request()) == "certificate_revoked"


def test_a_look_alike_certificate_is_refused_and_does_not_displace_the_genuine_one(
    granted: Enrolled,
) -> None:
    """Same subject, serial and key as the enrolled certificate, but issued by another CA
    with the identity CA's name: the database holds the genuine DER, so it is untrusted."""
    exchange.key_fetch(body=granted.request())  # the genuine one is cached
    genuine = x509.load_pem_x509_certificate(granted.certificate_pem.encode())
    rogue_key = generate_private_key("ecp256")
    rogue_ca = build_ca_certificate(
        subject=genuine.issuer,
        public_key=rogue_key.public_key(),
        signer=LoadedKeySigner(rogue_key),
        issuer_certificate=None,
        days=30,
        path_length=0,
    )
    look_alike = build_certificate(
        subject=genuine.subject,
        public_key=granted.private_key.public_key(),
        sans=[parse_san("uri:urn:kmsportal:client:billing")],
        profile=get_profile("kms-client"),
        issuer_certificate=rogue_ca,
        signer=LoadedKeySigner(rogue_key),
        crl_distribution_url="",
        ca_issuers_url="",
        ocsp_url="",
        days=10,
        serial_number=genuine.serial_number,
    )
    forged = Enrolled(granted.client, certificate_to_pem(look_alike).decode(), granted.private_key)
    assert refusal(forged.request()) == "untrusted_certificate"
    assert exchange.key_fetch(body=granted.request())["version"] == 1


def test_a_renewed_server_certificate_is_used_from_the_next_fetch(granted: Enrolled) -> None:
    first = exchange.key_fetch(body=granted.request())
    renewed = server_identity.server_identity_renew()
    second = exchange.key_fetch(body=granted.request())
    assert first["server_certificate_chain"][0] != second["server_certificate_chain"][0]
    assert second["server_certificate_chain"][0] == renewed.certificate.certificate_pem


def test_an_explicit_version_and_a_primary_only_grant(granted: Enrolled) -> None:
    services.symmetric_key_rotate(actor=None, key=granted.client.grants.get().key)
    assert exchange.key_fetch(body=granted.request(version=2))["version"] == 2
    assert exchange.key_fetch(body=granted.request())["version"] == 2
    assert refusal(granted.request(version=1)) == "version_not_granted"
    assert refusal(granted.request(version=7)) == "version_not_distributable"
