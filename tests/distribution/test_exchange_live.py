"""The key exchange end to end: the kmsclient library against a live server (real HTTP, real
views, real database), with a man in the middle where the test needs one.

The server's refusals are checked for their code, their HTTP status where it matters and
their audit event; the client's refusals for their code. Whatever is delivered must be the
very material the vault sealed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEvent
from kmsclient.client import FETCH_PATH, KMSClient, KMSClientError, problem_error
from kmsportal.crypto import protocol
from kmsportal.crypto.dh import GROUPS, generate_ephemeral
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    build_certificate,
    certificate_to_pem,
    generate_private_key,
    get_profile,
    parse_san,
    parse_subject,
)
from kmsportal.keyring.services import unseal
from pki.models import Certificate, CertificateStatus
from pki.revocation import certificate_revoke
from tests.distribution.conftest import (
    LiveKMS,
    assert_refusal_audited,
    refused,
)
from vault import clients, services
from vault.models import (
    Client,
    Delivery,
    GrantVersions,
    KeyVersion,
    RefusalTally,
    SymmetricKey,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def sealed_material(key: SymmetricKey, number: int | None = None) -> bytes:
    """What the vault holds for a version (the primary by default), unsealed for comparison."""
    versions = KeyVersion.objects.filter(key=key)
    version = versions.get(number=number) if number else versions.get(is_primary=True)
    return unseal(bytes(version.sealed_material), aad=version.aad)


def tampering_session(
    tamper: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
) -> requests.Session:
    """A session whose successful fetch answers pass through `tamper(answer, request_body)`
    on their way back: a man in the middle between a real client and the real server."""
    session = requests.Session()

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        request = response.request
        if request.method == "POST" and request.url.endswith(FETCH_PATH) and response.ok:
            forged = tamper(response.json(), json.loads(request.body))
            response._content = json.dumps(forged).encode()
        return response

    session.hooks["response"].append(hook)
    return session


def post_fetch(kms: LiveKMS, body: dict[str, Any]) -> requests.Response:
    return requests.post(kms.url + FETCH_PATH, json=body, timeout=10)


# --- deliveries ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_a_delivery_is_the_sealed_material_recorded_in_the_ledger(kms: LiveKMS, group: str) -> None:
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)

    fetched = client.fetch("orders-db", group=group)

    material = sealed_material(key)
    assert (fetched.key_name, fetched.version, fetched.material) == ("orders-db", 1, material)
    assert len(material) == 32
    delivery = Delivery.objects.get()
    assert (delivery.client.name, delivery.key, delivery.version, delivery.group) == (
        "billing",
        key,
        1,
        group,
    )
    event = AuditEvent.objects.filter(action="key.delivered").get()
    assert event.outcome == "success"
    assert event.actor_name == "billing"
    assert event.details == {"key": "orders-db", "version": 1, "group": group, "client": "billing"}
    everything = json.dumps([e.details for e in AuditEvent.objects.all()])
    for form in (material.hex(), base64.b64encode(material).decode()):
        assert form not in everything


def test_fetch_key_returns_the_bytes(kms: LiveKMS) -> None:
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    assert client.fetch_key("orders-db") == sealed_material(key)


# --- a man in the middle ------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_a_swapped_server_ephemeral_key_is_refused_by_the_client(kms: LiveKMS, group: str) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)

    def swap(answer: dict[str, Any], _request: dict[str, Any]) -> dict[str, Any]:
        attacker = generate_ephemeral(group)
        return {**answer, "server_public": base64.b64encode(attacker.public_bytes()).decode()}

    client = kms.client_for("billing", session=tampering_session(swap))
    error = refused("bad_server_signature", client.fetch, "orders-db", group=group)
    assert "does not verify" in str(error)
    # The server did deliver (it cannot tell): the ledger shows it, the client kept nothing.
    assert Delivery.objects.filter(client__name="billing").count() == 1


def _foreign_server() -> tuple[Any, list[str]]:
    """An impostor: a root, an intermediate and a kms-server certificate with exactly the
    names of the real ones, under keys the attacker holds."""
    root_key, ca_key, server_key = (generate_private_key("ecp256") for _ in range(3))
    root = build_ca_certificate(
        subject=parse_subject("CN=kmsportal root CA,O=kmsportal"),
        public_key=root_key.public_key(),
        signer=LoadedKeySigner(root_key),
        issuer_certificate=None,
        days=30,
        path_length=None,
    )
    ca = build_ca_certificate(
        subject=parse_subject("CN=kmsportal client identity CA,O=kmsportal"),
        public_key=ca_key.public_key(),
        signer=LoadedKeySigner(root_key),
        issuer_certificate=root,
        days=20,
        path_length=0,
    )
    leaf = build_certificate(
        subject=parse_subject("CN=kmsportal key server,O=kmsportal"),
        public_key=server_key.public_key(),
        sans=[parse_san("dns:localhost")],
        profile=get_profile("kms-server"),
        issuer_certificate=ca,
        signer=LoadedKeySigner(ca_key),
        crl_distribution_url="",
        ca_issuers_url="",
        ocsp_url="",
        days=10,
    )
    return server_key, [certificate_to_pem(c).decode() for c in (leaf, ca, root)]


@pytest.mark.parametrize("chain", ["foreign chain", "real chain"])
def test_a_response_re_signed_by_another_key_is_refused(kms: LiveKMS, chain: str) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    foreign_key, foreign_chain = _foreign_server()

    def re_sign(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        request, signature = protocol.FetchRequest.from_json(body)
        return protocol.build_fetch_response(
            request=request,
            request_signature=signature,
            key_name=answer["key_name"],
            version=answer["version"],
            client_name=answer["client_name"],
            key_material=b"\xa5" * 32,  # the attacker's choice of "key"
            server_private_key=foreign_key,
            server_chain_pems=(
                foreign_chain if chain == "foreign chain" else answer["server_certificate_chain"]
            ),
            server_status=base64.b64decode(answer["server_status"]),
        )

    client = kms.client_for("billing", session=tampering_session(re_sign))
    if chain == "foreign chain":
        error = refused("untrusted_server_identity", client.fetch, "orders-db")
        assert "does not verify" in str(error)
    else:
        refused("bad_server_signature", client.fetch, "orders-db")


def test_a_fetch_downloads_no_crl(kms: LiveKMS) -> None:
    """The server's status comes stapled in the signed response: no CRL, no OCSP request."""
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    requests_made: list[str] = []
    client.session.hooks["response"].append(
        lambda r, *a, **k: requests_made.append(f"{r.request.method} {r.request.url}")
    )
    for _ in range(3):
        assert client.fetch_key("orders-db") == sealed_material(key)
    assert requests_made == [f"POST {kms.url}/api/v1/keys/fetch"] * 3


# --- the server's checks ------------------------------------------------------------------


def test_a_replayed_request_is_refused(kms: LiveKMS) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    certificate, private_key = kms.credentials("billing")
    body, _state = protocol.build_fetch_request(
        key_name="orders-db",
        version=None,
        client_certificate_pem=certificate,
        client_private_key=private_key,
    )
    assert post_fetch(kms, body).status_code == 200
    again = post_fetch(kms, body)
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    assert again.json()["code"] == "replayed_request"
    assert str(problem_error(again)) == (
        "refused by server: replayed_request: this request was already received (replay)"
    )
    # Anyone who saw the request can replay it: counted for the source, not the client's.
    assert not AuditEvent.objects.filter(action="key.fetch_refused").exists()
    assert RefusalTally.objects.get().codes == {"replayed_request": 1}
    assert Delivery.objects.count() == 1


def test_a_stale_timestamp_is_refused(kms: LiveKMS) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    certificate, private_key = kms.credentials("billing")
    body, _state = protocol.build_fetch_request(
        key_name="orders-db",
        version=None,
        client_certificate_pem=certificate,
        client_private_key=private_key,
        now=datetime.now(UTC) - timedelta(minutes=6),
    )
    answer = post_fetch(kms, body)
    assert answer.status_code == 401
    assert answer.json()["code"] == "stale_timestamp"
    assert "outside ±5 minutes" in answer.json()["detail"]
    # A request seen on the wire goes stale, and anyone can send it then: not the client's.
    assert not AuditEvent.objects.filter(action="key.fetch_refused").exists()
    assert RefusalTally.objects.get().codes == {"stale_timestamp": 1}
    assert Delivery.objects.count() == 0


def test_a_client_cannot_fetch_a_key_granted_only_to_another(kms: LiveKMS) -> None:
    key = kms.key()
    alice = kms.enrolled("alice")
    kms.enrolled("bob")
    kms.grant("bob", key)
    kms.key("unrelated")

    answers = {}
    for name in ("orders-db", "unrelated", "no-such-key", "orders-db.v1"):
        error = refused("no_grant", alice.fetch, name)
        assert error.status == 403
        assert (
            str(error) == f"refused by server: no_grant: client alice has no grant for key {name!r}"
        )
        assert_refusal_audited("no_grant", client="alice", key=name)
        answers[name] = (error.status, error.message.replace(repr(name), "NAME"))
    assert len(set(answers.values())) == 1, "a guessed name gets exactly the same answer"
    # Nor by id: a key's UUID is not a valid key name at all.
    refused("bad_key_name", alice.fetch, str(key.pk).upper())
    assert Delivery.objects.count() == 0


def test_the_rate_limit_answers_429_with_retry_after(kms: LiveKMS, settings) -> None:
    settings.KMS_CLIENT_RATE_LIMIT = 3
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    window = settings.KMS_CLIENT_RATE_WINDOW_SECONDS
    if time.time() % window > window - 10:  # keep all four requests in one window
        time.sleep(window - time.time() % window + 0.5)
    for _ in range(3):
        client.fetch_key("orders-db")
    error = refused("rate_limited", client.fetch, "orders-db")
    assert error.status == 429
    assert error.retry_after is not None and 1 <= error.retry_after <= window + 1
    assert_refusal_audited("rate_limited", client="billing")
    assert Delivery.objects.count() == 3


# --- cut off at once ------------------------------------------------------------------------


def _working(kms: LiveKMS) -> tuple[KMSClient, SymmetricKey, Client]:
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    assert client.fetch_key("orders-db") == sealed_material(key)
    return client, key, Client.objects.get(name="billing")


def test_revoking_the_client_cuts_it_off(kms: LiveKMS) -> None:
    client, _key, record = _working(kms)
    clients.client_revoke(actor=None, client=record, reason="keyCompromise")
    assert Certificate.objects.get(pk=record.certificate_id).status == CertificateStatus.REVOKED
    # Its certificate is revoked in the same transaction, and that is checked first.
    error = refused("certificate_revoked", client.fetch, "orders-db")
    assert error.status == 401
    assert_refusal_audited("certificate_revoked", client="billing")


def test_revoking_only_the_certificate_cuts_the_client_off(kms: LiveKMS) -> None:
    client, _key, record = _working(kms)
    certificate_revoke(actor=None, certificate=record.certificate, reason="keyCompromise")
    refused("certificate_revoked", client.fetch, "orders-db")
    assert_refusal_audited("certificate_revoked", client="billing")
    record.refresh_from_db()
    assert record.state == "active", "only the certificate was revoked"


def test_suspending_the_client_cuts_it_off_and_resuming_restores_it(kms: LiveKMS) -> None:
    client, key, record = _working(kms)
    clients.client_suspend(actor=None, client=record)
    error = refused("client_suspended", client.fetch, "orders-db")
    assert str(error) == "refused by server: client_suspended: client billing is suspended"
    assert_refusal_audited("client_suspended", client="billing")
    clients.client_resume(actor=None, client=record)
    assert client.fetch_key("orders-db") == sealed_material(key)


def test_suspending_the_key_cuts_it_off(kms: LiveKMS) -> None:
    client, key, _record = _working(kms)
    services.symmetric_key_suspend(actor=None, key=key)
    error = refused("key_not_distributable", client.fetch, "orders-db")
    assert error.status == 409 and "suspended" in str(error)
    assert_refusal_audited("key_not_distributable", client="billing", key="orders-db")
    refused("key_not_distributable", client.fetch, "orders-db", version=1)


def test_compromising_the_key_cuts_it_off(kms: LiveKMS) -> None:
    client, key, _record = _working(kms)
    services.symmetric_key_compromise(actor=None, key=key, reason="found in a public bucket")
    error = refused("key_not_distributable", client.fetch, "orders-db")
    assert "compromised" in str(error)
    assert_refusal_audited("key_not_distributable", client="billing", key="orders-db")
    refused("key_not_distributable", client.fetch, "orders-db", version=1)


def test_an_expired_or_withdrawn_grant_cuts_the_client_off(kms: LiveKMS) -> None:
    client, _key, record = _working(kms)
    grant = record.grants.get()
    type(grant).objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused("grant_expired", client.fetch, "orders-db")
    assert_refusal_audited("grant_expired", client="billing")
    clients.grant_withdraw(actor=None, grant=grant)
    refused("no_grant", client.fetch, "orders-db")


# --- versions ---------------------------------------------------------------------------


def test_rotation_gives_the_new_primary_and_old_versions_until_they_may_not_decrypt(
    kms: LiveKMS,
) -> None:
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key, versions=GrantVersions.ALL)
    v1 = client.fetch("orders-db")
    assert (v1.version, v1.material) == (1, sealed_material(key, 1))

    services.symmetric_key_rotate(actor=None, key=key)
    latest = client.fetch("orders-db")
    assert (latest.version, latest.material) == (2, sealed_material(key, 2))
    assert latest.material != v1.material
    assert client.fetch("orders-db", version=1).material == v1.material
    refused("version_not_distributable", client.fetch, "orders-db", version=9)

    # Versions below min_decryption_version may no longer decrypt: not distributed either.
    services.symmetric_key_rotate(actor=None, key=key, min_decryption_version=2)
    error = refused("version_not_distributable", client.fetch, "orders-db", version=1)
    assert "below the minimum decryption version 2" in str(error)
    assert_refusal_audited("version_not_distributable", client="billing", key="orders-db")
    assert client.fetch("orders-db", version=2).material == sealed_material(key, 2)

    # A compromised version is never delivered again.
    services.key_version_compromise(actor=None, key=key, number=2, reason="leaked in a log")
    refused("version_not_distributable", client.fetch, "orders-db", version=2)

    # A deactivated key delivers explicitly requested versions (to decrypt), never a primary.
    services.symmetric_key_deactivate(actor=None, key=key)
    refused("key_not_distributable", client.fetch, "orders-db")
    assert client.fetch("orders-db", version=3).material == sealed_material(key, 3)
    assert sorted(Delivery.objects.values_list("version", flat=True)) == [1, 1, 2, 2, 3]


def test_a_primary_only_grant_does_not_cover_older_versions(kms: LiveKMS) -> None:
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key, versions=GrantVersions.PRIMARY)
    services.symmetric_key_rotate(actor=None, key=key)
    assert client.fetch("orders-db").version == 2
    assert client.fetch("orders-db", version=2).version == 2
    error = refused("version_not_granted", client.fetch, "orders-db", version=1)
    assert "primary version only" in str(error)
    assert_refusal_audited("version_not_granted", client="billing")


def refused_code(client: KMSClient, name: str, version: int | None) -> str:
    try:
        client.fetch(name, version)
    except KMSClientError as exc:
        return exc.code
    raise AssertionError(f"{name} v{version} was delivered")


def test_refusals_are_audited_with_the_code_the_client_saw(kms: LiveKMS) -> None:
    """A compact sweep: each refusal a client can provoke leaves a key.fetch_refused event
    whose details carry the same code the client saw."""
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    services.symmetric_key_rotate(actor=None, key=key)
    seen = []
    for name, version in (("nope", None), ("orders-db", 1), ("orders-db", 7)):
        seen.append(refused_code(client, name, version))
    assert seen == ["no_grant", "version_not_granted", "version_not_distributable"]
    events = AuditEvent.objects.filter(action="key.fetch_refused").order_by("sequence")
    assert [e.details["code"] for e in events] == seen
    assert all(e.actor_name == "billing" and e.outcome == "denied" for e in events)
