"""Two gunicorn nodes, A and B, on one PostgreSQL database and one Redis: what one node
learns, the other knows at the next request.

- a request's nonce spent at A is refused as a replay at B;
- a client revoked through A's portal page is refused by B at its next request;
- certificates revoked concurrently through both nodes' portal pages: every one revoked once,
  cRLNumber strictly increasing without duplicates, the newest CRL lists them all, one linear
  audit chain, and A and B serve the same CRL bytes with the same ETag;
- the client rate limit and the sign-in lockout count requests made at either node;
- a session signed in at A is signed in at B (no sticky sessions needed).

Real processes (`gunicorn -c kmsportal/gunicorn.conf.py`, DEBUG=false), real HTTP, real
sign-in (password and authenticator code) through the pages. Needs PostgreSQL and Redis
(`.ci/run` provides both); skipped without them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections

from accounts import mfa
from accounts.roles import Role
from audit.checking import audit_chain_check
from audit.models import AuditEvent
from kmsclient.client import FETCH_PATH, KMSClient, KMSClientError, enroll
from kmsclient.identity import load_identity
from kmsportal.crypto import protocol
from kmsportal.crypto.crl import crl_summary, load_crl, revoked_serials
from kmsportal.keyring.services import unseal
from pki import services as pki_services
from pki.models import Certificate, CertificateAuthority, RevocationList
from tests.factories import TEST_PASSWORD, mfa_enroll, mfa_next_code, mfa_secret
from tests.pki.conftest import csr_pem
from tests.scaleout.conftest import NODE_CLIENT_RATE_LIMIT
from tests.scaleout.processes import REDIS_DB_NODES, GunicornNode, flush_redis, redis_counters
from vault import clients, server_identity, services
from vault.models import Delivery, KeyVersion, RefusalTally, SymmetricKey

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    # The nodes verify passwords with the production hashers (Argon2).
    pytest.mark.real_password_hasher,
    pytest.mark.slow,
]

CERTIFICATES = 12
REVOKERS_PER_NODE = 2


# --- HTTP as a browser does it -----------------------------------------------------------------


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy from the environment
    return session


class _HiddenInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.fields.setdefault(str(values["name"]), values.get("value") or "")


def hidden_fields(page: requests.Response) -> dict[str, str]:
    """The hidden inputs of a page's forms (the CSRF token first of all)."""
    assert page.status_code == 200, f"{page.url}: {page.status_code}"
    parser = _HiddenInputs()
    parser.feed(page.text)
    assert "csrfmiddlewaretoken" in parser.fields, f"{page.url} has no CSRF token"
    return parser.fields


def submit(session: requests.Session, url: str, data: dict[str, str]) -> requests.Response:
    """GET the form page at ``url``, POST it back with ``data``; the answer, not followed."""
    form = hidden_fields(session.get(url, timeout=30))
    return session.post(url, data={**form, **data}, allow_redirects=False, timeout=60)


def sign_in(node: GunicornNode, user: User) -> requests.Session:
    """Sign ``user`` in at ``node`` through the pages: the password, then the authenticator
    code for users who need one (enrolled through the services first, as a person would
    have done once)."""
    if mfa.mfa_required_for(user) and mfa_secret(user) is None:
        mfa_enroll(user)
    session = http_session()
    answer = submit(
        session,
        node.url + "/accounts/login/",
        {"username": user.username, "password": TEST_PASSWORD},
    )
    assert answer.status_code == 302, f"sign-in of {user.username} at {node.name} failed"
    location = answer.headers["Location"]
    assert location.startswith("/accounts/mfa/") == mfa.mfa_required_for(user), location
    if location.startswith("/accounts/mfa/"):
        assert location.startswith("/accounts/mfa/verify/"), location
        # mfa_next_code reads the last used step from the shared database: a code is
        # accepted once per step and user, at whichever node.
        answer = submit(session, node.url + location, {"code": mfa_next_code(user)})
        assert answer.status_code == 302, f"MFA step of {user.username} at {node.name} failed"
        location = answer.headers["Location"]
    assert not location.startswith("/accounts/"), location
    return session


def copy_of(session: requests.Session) -> requests.Session:
    """Another connection with the same cookies (a second tab of the same browser)."""
    other = http_session()
    other.cookies.update(session.cookies)
    return other


# --- the cluster -------------------------------------------------------------------------------


@dataclass
class Cluster:
    a: GunicornNode
    b: GunicornNode
    root_pem: str
    tmp_path: Path
    clients: list[KMSClient] = field(default_factory=list)

    @property
    def root_file(self) -> Path:
        path = self.tmp_path / "kms-root.pem"
        if not path.exists():
            path.write_text(self.root_pem)
        return path

    def key(self, name: str = "orders-db") -> SymmetricKey:
        return services.symmetric_key_create(actor=None, name=name)

    def enrolled(self, name: str, key: SymmetricKey) -> None:
        """Register ``name`` (operator, through the services), enroll it through node A
        (the client library over HTTP) and grant it ``key``."""
        record, token = clients.client_create(actor=None, name=name)
        enroll(self.a.url, token, self.root_file, self.tmp_path / name)
        clients.grant_create(actor=None, client=record, key=key, versions="primary")

    def client_at(self, node: GunicornNode, name: str) -> KMSClient:
        """The enrolled client ``name`` talking to ``node`` (it checks the server identity
        it pinned and the status both nodes staple from the shared cache)."""
        identity = load_identity(self.tmp_path / name)
        client = KMSClient(
            node.url,
            identity.cert,
            identity.key,
            identity.ca_cert,
            server_ca_spki_sha256=identity.server_ca_spki_sha256,
            deployment=identity.deployment,
            session=http_session(),
        )
        self.clients.append(client)
        return client

    def signed_request(self, name: str, key_name: str = "orders-db") -> dict[str, Any]:
        """One fetch request body as the client library builds it (nonce, timestamp,
        signature), for sending by hand."""
        directory = self.tmp_path / name
        private_key = serialization.load_pem_private_key(
            (directory / "client.key").read_bytes(), None
        )
        body, _state = protocol.build_fetch_request(
            key_name=key_name,
            version=None,
            client_certificate_pem=(directory / "client.crt").read_text(),
            client_private_key=private_key,
        )
        return body


@pytest.fixture
def cluster(
    nodes: tuple[GunicornNode, GunicornNode], settings, tmp_path: Path
) -> Iterator[Cluster]:
    """Both nodes on a freshly bootstrapped KMS; Redis database 14 empty before and after."""
    flush_redis(REDIS_DB_NODES)
    a, b = nodes
    settings.KMS_PUBLIC_URL = a.url  # the same as the nodes': certificates name node A
    settings.KMS_IDENTITY_CA_KEY_TYPE = "ecp256"
    server_identity.distribution_bootstrap()
    root = server_identity.root_ca()
    assert root is not None
    cluster = Cluster(a=a, b=b, root_pem=root.certificate_pem, tmp_path=tmp_path)
    yield cluster
    for client in cluster.clients:
        client.close()
    flush_redis(REDIS_DB_NODES)


def sealed_primary(key: SymmetricKey) -> bytes:
    version = KeyVersion.objects.get(key=key, is_primary=True)
    return unseal(bytes(version.sealed_material), aad=version.aad)


def refusal_code(call: Any, *args: Any) -> tuple[str, int | None]:
    with pytest.raises(KMSClientError) as caught:
        call(*args)
    return caught.value.code, caught.value.status


def last_refusal(code: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action="key.fetch_refused").order_by("-sequence").first()
    assert event is not None, "the refusal was not audited"
    assert (event.outcome, event.details["code"]) == ("denied", code)
    return event


# --- the client API ------------------------------------------------------------------------------


def test_a_nonce_spent_at_one_node_is_a_replay_at_the_other(cluster: Cluster) -> None:
    key = cluster.key()
    cluster.enrolled("billing", key)
    body = cluster.signed_request("billing")

    first = http_session().post(cluster.a.url + FETCH_PATH, json=body, timeout=30)
    assert first.status_code == 200, first.text
    again = http_session().post(cluster.b.url + FETCH_PATH, json=body, timeout=30)
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    assert again.json()["code"] == "replayed_request"
    # A replay is anyone's (it was on the wire): tallied for its source, not the client's.
    assert not AuditEvent.objects.filter(action="key.fetch_refused").exists()
    assert RefusalTally.objects.get().codes == {"replayed_request": 1}
    assert Delivery.objects.count() == 1, "node B delivered nothing"


def test_a_client_revoked_through_one_node_is_refused_by_the_other(
    cluster: Cluster, make_user
) -> None:
    key = cluster.key()
    cluster.enrolled("billing", key)
    at_a, at_b = cluster.client_at(cluster.a, "billing"), cluster.client_at(cluster.b, "billing")
    assert at_a.fetch_key("orders-db") == sealed_primary(key)
    assert at_b.fetch_key("orders-db") == sealed_primary(key)  # B served it a moment ago

    custodian = make_user("kim-custodian", Role.KEY_CUSTODIAN)
    portal = sign_in(cluster.a, custodian)
    revoked = submit(
        portal, cluster.a.url + "/clients/billing/revoke/", {"reason": "keyCompromise"}
    )
    assert revoked.status_code == 302
    assert revoked.headers["Location"] == "/clients/billing/"
    event = AuditEvent.objects.filter(action="client.revoked").get()
    assert event.actor_name == "kim-custodian"

    code, status = refusal_code(at_b.fetch, "orders-db")
    assert (code, status) == ("certificate_revoked", 401)
    assert last_refusal("certificate_revoked").actor_name in (
        "billing",
        "CN=billing,O=kmsportal clients",
    )
    assert Delivery.objects.count() == 2

    # The session made at A is a session at B too (sessions live in the database).
    at_b_with_a_cookie = copy_of(portal).get(cluster.b.url + "/clients/", allow_redirects=False)
    assert at_b_with_a_cookie.status_code == 200
    assert "billing" in at_b_with_a_cookie.text


def test_the_client_rate_limit_counts_requests_at_both_nodes(cluster: Cluster) -> None:
    key = cluster.key()
    cluster.enrolled("billing", key)
    at = {
        "a": cluster.client_at(cluster.a, "billing"),
        "b": cluster.client_at(cluster.b, "billing"),
    }
    window = django_settings.KMS_CLIENT_RATE_WINDOW_SECONDS  # a constant, as in the nodes
    if time.time() % window > window - 10:  # keep every request in one window
        time.sleep(window - time.time() % window + 0.5)
    for index in range(NODE_CLIENT_RATE_LIMIT):
        at["ab"[index % 2]].fetch_key("orders-db")
    for node in ("a", "b"):
        code, status = refusal_code(at[node].fetch, "orders-db")
        assert (code, status) == ("rate_limited", 429), f"node {node}"
    counters = redis_counters(REDIS_DB_NODES, "*kms:rate:*")
    assert list(counters.values()) == [NODE_CLIENT_RATE_LIMIT + 2], "one count for both nodes"
    assert Delivery.objects.count() == NODE_CLIENT_RATE_LIMIT


# --- the portal ----------------------------------------------------------------------------------


def test_a_sign_in_lockout_counts_failures_at_both_nodes(cluster: Cluster, make_user) -> None:
    make_user("dana-auditor", Role.AUDITOR)
    login = "/accounts/login/"
    for node in (cluster.a, cluster.b, cluster.a, cluster.b, cluster.a):  # 5: the limit
        failed = submit(
            http_session(),
            node.url + login,
            {"username": "dana-auditor", "password": "wrong password 1"},
        )
        assert failed.status_code == 200, "the form again, with an error"
    for node in (cluster.b, cluster.a):
        locked = submit(
            http_session(),
            node.url + login,
            {"username": "dana-auditor", "password": TEST_PASSWORD},
        )
        assert locked.status_code == 429, node.name
        assert "Too many failed sign-in attempts" in locked.text
    # One count in Redis, fed by both nodes (keyed by an HMAC of the username).
    assert list(redis_counters(REDIS_DB_NODES, "*kms:signin:user:*").values()) == [5]
    assert AuditEvent.objects.filter(action="auth.sign_in_failed").count() == 5
    assert AuditEvent.objects.filter(action="auth.sign_in_locked").count() == 2


def test_concurrent_revocations_through_both_nodes_keep_one_crl_sequence_and_one_audit_chain(
    cluster: Cluster, make_user
) -> None:
    root = pki_services.certificate_authority_create(
        actor=None, name="scale-root", subject="CN=Scale-out Root", key_type="ecp256"
    )
    ca = pki_services.certificate_authority_create(
        actor=None, name="scale-ca", subject="CN=Scale-out CA", parent=root, key_type="ecp256"
    )
    csr = csr_pem(ec.generate_private_key(ec.SECP256R1()))
    certificates = [
        pki_services.certificate_issue_from_csr(
            actor=None, ca=ca, csr_pem_or_der=csr, profile="tls-server"
        )
        for _ in range(CERTIFICATES)
    ]
    # One CA operator per node (each signs in once: an authenticator code is good once).
    operators = [
        (cluster.a, sign_in(cluster.a, make_user("olga-operator", Role.CA_OPERATOR))),
        (cluster.b, sign_in(cluster.b, make_user("omar-operator", Role.CA_OPERATOR))),
    ]
    revokers = [
        (node, copy_of(session)) for node, session in operators for _ in range(REVOKERS_PER_NODE)
    ]
    start = threading.Barrier(len(revokers))
    answers: dict[int, list[int]] = {c.pk: [] for c in certificates}
    errors: list[BaseException] = []

    def revoke(node: GunicornNode, session: requests.Session, mine: list[Certificate]) -> None:
        try:
            start.wait(timeout=60)
            for certificate in mine:
                answer = submit(
                    session,
                    f"{node.url}/pki/certificates/{certificate.pk}/revoke/",
                    {"reason": "keyCompromise", "invalidity_date": "", "confirm": "yes"},
                )
                answers[certificate.pk].append(answer.status_code)
                assert answer.headers.get("Location") == f"/pki/certificates/{certificate.pk}/"
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=revoke, args=(node, session, certificates[index :: len(revokers)]))
        for index, (node, session) in enumerate(revokers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []

    # Every certificate revoked once, by one of the two operators, each through its node.
    assert answers == {c.pk: [302] for c in certificates}
    assert not Certificate.objects.filter(ca=ca).exclude(status="revoked").exists()
    revoked = AuditEvent.objects.filter(action="certificate.revoked")
    assert sorted(revoked.values_list("target_id", flat=True)) == sorted(
        str(c.pk) for c in certificates
    )
    assert set(revoked.values_list("actor_name", flat=True)) == {"olga-operator", "omar-operator"}

    # The CA's first complete CRL and its delta, then one delta CRL per revocation: numbered
    # 1, 2, 3, ... in commit order, each delta listing one more certificate than the one
    # before (every revocation since the complete CRL, RFC 5280 5.2.4).
    crls = list(RevocationList.objects.filter(ca=ca).order_by("id"))
    assert [c.crl_number for c in crls] == list(range(1, CERTIFICATES + 3))
    assert [c.is_delta for c in crls] == [False] + [True] * (CERTIFICATES + 1)
    assert [c.entry_count for c in crls] == [0, *range(CERTIFICATES + 1)]
    newest = crls[-1]
    parsed = load_crl(bytes(newest.crl_der))
    assert crl_summary(parsed).crl_number == CERTIFICATES + 2
    assert set(revoked_serials(parsed)) == {int(c.serial_hex, 16) for c in certificates}

    # One audit tree holding every event both nodes wrote (audit log v2: no gap-free
    # numbering, one sequencer at a time integrates them all under one signed head).
    from audit.sequencer import audit_integrate

    head = audit_integrate().head
    report = audit_chain_check()
    assert report.ok, report.problem
    assert head.tree_size == AuditEvent.objects.filter(leaf__isnull=False).count()
    assert report.pending <= 1  # at most the head's own signing-key record

    # Relying parties get the same (delta) CRL whichever node the load balancer picks.
    served = {
        node.name: http_session().get(f"{node.url}/pki/crl/scale-ca-delta.crl", timeout=30)
        for node in (cluster.a, cluster.b)
    }
    for answer in served.values():
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/pkix-crl"
    assert served["a"].content == served["b"].content == bytes(newest.crl_der)
    assert served["a"].headers["ETag"] == served["b"].headers["ETag"]
    assert CertificateAuthority.objects.get(pk=ca.pk).state == "active"
