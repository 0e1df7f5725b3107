"""The server identity against the attacks of issue 13, with real HTTP and an unmodified
`kmsclient`.

* A CA operator obtains every certificate the portal's issuance pages let them obtain (every
  CA x every profile, `kms-server` included, server-identity CA included: those are refused),
  a rogue KMS presents each one with a transcript signed by the matching key and a genuine
  OCSP status for it, and `kmsclient fetch` refuses every time with
  `untrusted_server_identity`, while the genuine server works. So is what `manage.py
  cert_issue` obtains from CAs the pages do not offer (a `tls-server` certificate straight
  from the root, the issue's own example; certificates from the client identity CA).
* An enrollment intercepted by a proxy cannot be replayed with another CSR, and a tampered
  answer is refused.
* A revoked server certificate is refused within the freshness bound: an older "good" status
  replayed by the holder of the stolen key is refused once it is older than the bound (client
  clock advanced), and the KMS's own fresh status says revoked.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.core.cache import cache
from django.core.management import call_command

from accounts.roles import Role
from kmsclient.client import KMSClient
from kmsportal.crypto import protocol
from kmsportal.crypto.profiles import PROFILES
from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
from kmsportal.keyring.services import unseal
from pki.models import Certificate, CertificateAuthority
from pki.ocsp import certificate_status_staple
from pki.services import certificate_revoke
from tests.distribution.conftest import LiveKMS, refused
from vault import server_identity
from vault.models import Client, ServerIdentity

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ATTACKER_MATERIAL = b"\x41" * 32


#: SANs a rogue would ask for, per profile: as close to the real KMS as the profile allows
#: (the genuine deployment URI wherever a URI is allowed, the KMS's host name wherever a DNS
#: name is).
def _sans(profile: str, host: str, deployment: str) -> list[str]:
    allowed = PROFILES[profile].allowed_san_types
    sans = []
    if "dns" in allowed:
        sans.append(f"dns:{host}")
    if "uri" in allowed:
        sans.append(f"uri:{deployment}")
    if "email" in allowed:
        sans.append("email:kms@example.org")
    return sans


class RogueKMS:
    """A KMS impostor on loopback: answers fetches with `ATTACKER_MATERIAL`, signs the
    transcript with its own key and presents its certificate chain and a staple."""

    def __init__(self) -> None:
        self.key: Any = None
        self.chain: list[str] = []
        self.staple = b""
        rogue = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request, signature = protocol.FetchRequest.from_json(body)
                answer = protocol.build_fetch_response(
                    request=request,
                    request_signature=signature,
                    key_name=request.key_name,
                    version=request.version or 1,
                    client_name="billing",
                    key_material=ATTACKER_MATERIAL,
                    server_private_key=rogue.key,
                    server_chain_pems=rogue.chain,
                    server_status=rogue.staple,
                )
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def present(self, key: Any, record: Certificate, staple: bytes) -> None:
        chain = [record.certificate_pem]
        ca = record.ca
        while ca is not None:
            chain.append(ca.certificate_pem)
            ca = ca.parent
        self.key, self.chain, self.staple = key, chain, staple

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rogue() -> Iterator[RogueKMS]:
    server = RogueKMS()
    yield server
    server.close()


def _identity_pointing_at(kms: LiveKMS, name: str, url: str) -> Path:
    """A copy of an enrolled identity whose KMS URL is the rogue's: the client's traffic goes
    where an on-path attacker sends it; everything it pinned is unchanged."""
    copy = kms.tmp_path / f"{name}-diverted"
    shutil.copytree(kms.tmp_path / name, copy)
    config = json.loads((copy / "kmsclient.json").read_text())
    config["url"] = url
    (copy / "kmsclient.json").write_text(json.dumps(config))
    return copy


def _issue_on_the_page(operator: Any, ca: str, profile: str, sans: list[str]) -> tuple[Any, Any]:
    """What a CA operator gets from **PKI → Issue from a CSR** (the final `issue` step, with
    any CA and profile name posted): (private key, Certificate) or (None, the response)."""
    key = generate_private_key("ecp256")
    csr = build_csr(private_key=key, subject=parse_subject("CN=kmsportal key server,O=kmsportal"))
    before = set(Certificate.objects.values_list("pk", flat=True))
    response = operator.post(
        "/pki/issue/",
        {
            "step": "issue",
            "csr_pem": csr.decode(),
            "ca": ca,
            "profile": profile,
            "days": "",
            "subject": "CN=kmsportal key server,O=kmsportal",
            "sans": "\n".join(sans),
        },
    )
    new = Certificate.objects.exclude(pk__in=before)
    if response.status_code == 302 and new.count() == 1:
        return key, new.get()
    assert not new.exists()
    return None, response


def test_no_certificate_a_ca_operator_can_obtain_passes_for_the_kms(
    kms: LiveKMS, rogue: RogueKMS, make_user, signed_in
) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    genuine = kms.cli("fetch", "orders-db", "--stdout", "--dir", kms.tmp_path / "billing")
    assert genuine.returncode == 0, genuine.stderr
    assert base64.b64decode(genuine.stdout) != ATTACKER_MATERIAL

    # An administrator's extra intermediate under the root: CA operators issue from it too.
    from pki.services import certificate_authority_create

    certificate_authority_create(
        actor=None,
        name="team-ca",
        subject="CN=team CA,O=kmsportal",
        parent=server_identity.root_ca(),
        key_type="ecp256",
    )
    carol = make_user("carol", Role.CA_OPERATOR)
    operator = signed_in(carol)
    host = kms.url.split("://")[1].split(":")[0]
    deployment = server_identity.deployment().uri
    obtained: list[tuple[str, str, Any, Certificate]] = []
    refusals: dict[tuple[str, str], int] = {}
    for ca in CertificateAuthority.objects.order_by("name"):
        for profile in sorted(PROFILES):
            private_key, result = _issue_on_the_page(
                operator, ca.name, profile, _sans(profile, host, deployment)
            )
            if private_key is None:
                refusals[(ca.name, profile)] = result.status_code
            else:
                obtained.append((ca.name, profile, private_key, result))

    server_ca = server_identity.server_identity_ca().name
    # Neither the server-identity CA nor the kms-server profile ever issues from the pages.
    assert {(ca, p) for ca, p in refusals} >= {
        *((server_ca, p) for p in PROFILES),
        *((ca.name, "kms-server") for ca in CertificateAuthority.objects.all()),
    }
    assert all(status == 400 for status in refusals.values()), refusals
    assert not any(ca == server_ca or p == "kms-server" for ca, p, _k, _r in obtained)
    # And everything else the portal allows was obtained: every CA the issuance pages offer
    # (active intermediates other than the key distribution's own) x every other profile.
    from pki.selectors import ca_issuing_choices

    offered = {name for name, _label in ca_issuing_choices(user=carol)}
    assert server_ca not in offered and offered
    assert {ca for ca, _p, _k, _r in obtained} == offered
    assert len(obtained) == len(offered) * (len(PROFILES) - 1), sorted(refusals)

    diverted = _identity_pointing_at(kms, "billing", rogue.url)
    for ca, profile, private_key, record in obtained:
        # The strongest rogue: the matching private key, and a genuine "good" OCSP response
        # for its certificate from the portal's own responder.
        rogue.present(private_key, record, certificate_status_staple(certificate=record))
        result = kms.cli("fetch", "orders-db", "--stdout", "--dir", diverted)
        assert result.returncode == 1, (ca, profile, result.stdout)
        assert result.stdout == ""
        assert "untrusted_server_identity" in result.stderr, (ca, profile, result.stderr)

    # The genuine server still works for the same client.
    again = kms.cli("fetch", "orders-db", "--stdout", "--dir", kms.tmp_path / "billing")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("ca_name", "profile", "sans"),
    [
        # The issue's own example: a plain TLS server certificate straight from the root.
        ("kms-root", "tls-server", ["dns:intranet.example.org"]),
        ("kms-root", "tls-server", ["dns:{host}"]),
        ("kms-clients", "tls-server", ["dns:{host}"]),
        ("kms-clients", "kms-client", ["uri:{deployment}"]),
    ],
)
def test_a_certificate_from_cert_issue_under_the_root_does_not_pass_for_the_kms(
    kms: LiveKMS, rogue: RogueKMS, tmp_path: Path, ca_name: str, profile: str, sans: list[str]
) -> None:
    """`manage.py cert_issue` reaches CAs the issuance pages do not offer (the root itself,
    the client identity CA). What it issues there chains to the pinned root, yet a rogue
    presenting it, with the matching key and a genuine "good" status, is refused by an
    unmodified `kmsclient fetch` as not the KMS's identity."""
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    host = kms.url.split("://")[1].split(":")[0]
    deployment = server_identity.deployment().uri
    private_key = generate_private_key("ecp256")
    csr = tmp_path / "rogue.csr"
    csr.write_bytes(build_csr(private_key=private_key, subject=parse_subject("CN=rogue")))
    out = tmp_path / "rogue.pem"
    options = ["--ca", ca_name, "--profile", profile, "--csr", str(csr), "--out", str(out)]
    for san in sans:
        options += ["--san", san.format(host=host, deployment=deployment)]
    call_command("cert_issue", *options, stdout=io.StringIO())
    record = Certificate.objects.get(certificate_pem=out.read_text())
    assert (record.ca.name, record.profile) == (ca_name, profile)
    root = server_identity.root_ca()
    assert root is not None and root.name == "kms-root"
    assert record.ca == root or record.ca.parent == root, "it chains to the pinned root"

    rogue.present(private_key, record, certificate_status_staple(certificate=record))
    diverted = _identity_pointing_at(kms, "billing", rogue.url)
    result = kms.cli("fetch", "orders-db", "--stdout", "--dir", diverted)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert "untrusted_server_identity" in result.stderr, result.stderr

    genuine = kms.cli("fetch", "orders-db", "--stdout", "--dir", kms.tmp_path / "billing")
    assert genuine.returncode == 0, genuine.stderr
    assert base64.b64decode(genuine.stdout) != ATTACKER_MATERIAL


def test_the_stolen_genuine_key_with_a_stale_status_is_refused_after_revocation(
    kms: LiveKMS, rogue: RogueKMS, settings
) -> None:
    """The server certificate is revoked (its key is stolen). The thief replays the last
    "good" status it saw: accepted while younger than the client's bound, refused after; the
    KMS itself staples "revoked" from its next refresh on."""
    settings.KMS_SERVER_STATUS_REFRESH_SECONDS = 600
    key = kms.key()
    client = kms.enrolled("billing")
    kms.grant("billing", key)
    captured: list[dict[str, Any]] = []
    client.session.hooks["response"].append(lambda r, *a, **k: captured.append(r.json()))
    assert client.fetch_key("orders-db") != ATTACKER_MATERIAL
    good_staple = base64.b64decode(captured[-1]["server_status"])
    produced = datetime.now(UTC)

    identity = ServerIdentity.objects.select_related("certificate").get()
    stolen_key = serialization.load_der_private_key(
        unseal(bytes(identity.sealed_private_key), aad=identity.aad), None
    )
    certificate_revoke(actor=None, certificate=identity.certificate, reason="keyCompromise")
    rogue.present(stolen_key, identity.certificate, good_staple)
    thief = KMSClient.from_identity(_identity_pointing_at(kms, "billing", rogue.url))
    kms.clients.append(thief)
    # Within the bound the replayed status still passes: this is exactly the bound's meaning.
    assert thief.fetch_key("orders-db") == ATTACKER_MATERIAL
    later = KMSClient.from_identity(
        kms.tmp_path / "billing-diverted",
        clock=lambda: produced + timedelta(minutes=10, seconds=30),
    )
    kms.clients.append(later)
    error = refused("stale_server_status", later.fetch, "orders-db")
    assert "older than the 600 s this client accepts" in str(error)
    # The genuine KMS, once its staple is renewed (here: the cache entry expires), says so.
    cache.clear()
    error = refused("server_certificate_revoked", client.fetch, "orders-db")
    assert "was revoked on" in str(error)
    cli = kms.cli("fetch", "orders-db", "--stdout", "--dir", kms.tmp_path / "billing")
    assert cli.returncode == 1 and "was revoked on" in cli.stderr


def test_two_deployments_sharing_a_root_cannot_pass_for_each_other(
    kms: LiveKMS, rogue: RogueKMS
) -> None:
    """Deployment B under the same root: its own server-identity CA and deployment id. Even
    its genuine server certificate, key and status are refused by A's clients."""
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    from pki.services import certificate_authority_create, server_identity_certificate_issue

    root = server_identity.root_ca()
    # B's server-identity CA (the mark is per database; B's lives in B's database, so here it
    # is made by hand and marked only while B's certificate is issued).
    a_ca = server_identity.server_identity_ca()
    CertificateAuthority.objects.filter(pk=a_ca.pk).update(server_identity=False)
    b_ca = certificate_authority_create(
        actor=None,
        name="b-server-identity",
        subject="CN=B server identity CA,O=kmsportal",
        parent=root,
        key_type="ecp256",
        server_identity=True,
    )
    b_key = generate_private_key("ecp256")
    host = kms.url.split("://")[1].split(":")[0]
    for deployment in (
        "urn:kmsportal:deployment:00000000-0000-4000-8000-000000000000",  # B's own
        server_identity.deployment().uri,  # even claiming A's deployment id
    ):
        record = server_identity_certificate_issue(
            ca=b_ca,
            csr_pem_or_der=build_csr(private_key=b_key, subject=parse_subject("CN=kms")),
            subject="CN=kmsportal key server,O=kmsportal",
            sans=[f"dns:{host}", f"uri:{deployment}"],
        )
        rogue.present(b_key, record, certificate_status_staple(certificate=record))
        diverted = _identity_pointing_at(kms, "billing", rogue.url)
        result = kms.cli("fetch", "orders-db", "--stdout", "--dir", diverted)
        assert result.returncode == 1
        assert "untrusted_server_identity" in result.stderr
        assert "not issued by the server-identity CA pinned at enrollment" in result.stderr
        shutil.rmtree(diverted)
    CertificateAuthority.objects.filter(pk=b_ca.pk).update(server_identity=False)
    CertificateAuthority.objects.filter(pk=a_ca.pk).update(server_identity=True)


# --- enrollment on a path an attacker controls ----------------------------------------------


class EnrollmentProxy:
    """A proxy on the path: forwards enrollment requests to the KMS, keeps a copy of each,
    and can rewrite the answer (`tamper`)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[dict[str, Any]] = []
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                proxy.seen.append(body)
                answer = requests.post(proxy.upstream + self.path, json=body, timeout=30)
                data = answer.content
                if proxy.tamper is not None and answer.status_code == 201:
                    data = json.dumps(proxy.tamper(answer.json())).encode()
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["Content-Type"])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_intercepted_enrollment_cannot_be_replayed_with_another_csr(kms: LiveKMS) -> None:
    key = kms.key()
    _client, token = kms.new_client("billing")
    proxy = EnrollmentProxy(kms.url)
    try:
        result = kms.cli(
            "enroll",
            "--url",
            proxy.url,
            f"--token={token}",
            "--ca-cert",
            kms.root_file,
            "--out",
            kms.tmp_path / "billing",
        )
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    (seen,) = proxy.seen
    assert token not in json.dumps(seen), "the token itself never crosses the wire"
    kms.grant("billing", key)
    config_file = kms.tmp_path / "billing" / "kmsclient.json"  # the proxy is gone now
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "url": kms.url}))

    # The observer replays the request with its own CSR: refused, nothing issued.
    attacker_key = generate_private_key("ecp256")
    forged = {**seen, "csr": build_csr(private_key=attacker_key, subject=parse_subject("CN=x"))}
    forged["csr"] = forged["csr"].decode()
    certificates = Certificate.objects.count()
    for body in (forged, seen):
        answer = requests.post(kms.url + "/api/v1/enroll", json=body, timeout=30)
        assert answer.status_code == 401
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_token"  # spent by the genuine enrollment
    assert Certificate.objects.count() == certificates

    # Before the genuine request arrives, a forged CSR with the captured proof is refused
    # and the token stays usable for the real service.
    _client, token = kms.new_client("reporting")
    genuine, _state = protocol.build_enroll_request(
        token=token,
        csr_pem=build_csr(
            private_key=generate_private_key("ecp256"), subject=parse_subject("CN=r")
        ).decode(),
    )
    stolen = {**genuine, "csr": forged["csr"]}
    answer = requests.post(kms.url + "/api/v1/enroll", json=stolen, timeout=30)
    assert answer.status_code == 401 and answer.json()["code"] == "bad_token_proof"
    assert Client.objects.get(name="reporting").certificate is None
    assert requests.post(kms.url + "/api/v1/enroll", json=genuine, timeout=30).status_code == 201

    # The legacy form that carried the token is refused outright.
    _client, token = kms.new_client("legacy")
    answer = requests.post(
        kms.url + "/api/v1/enroll", json={"token": token, "csr": forged["csr"]}, timeout=30
    )
    assert answer.status_code == 400 and answer.json()["code"] == "legacy_enrollment"
    assert Client.objects.get(name="legacy").enrollment_token_hash  # not spent

    # The client still fetches; the attacker has nothing to fetch with.
    assert kms.client_for("billing").fetch_key("orders-db") != ATTACKER_MATERIAL


@pytest.mark.parametrize(
    "tamper",
    ["certificate", "server_identity", "server_chain"],
)
def test_a_tampered_enrollment_answer_is_refused(kms: LiveKMS, tamper: str) -> None:
    _client, token = kms.new_client("billing")
    other = generate_private_key("ecp256")

    def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
        if tamper == "certificate":
            return {**answer, "certificate": answer["chain"][1]}
        if tamper == "server_identity":
            return {
                **answer,
                "server_identity": {**answer["server_identity"], "ca_spki_sha256": "0" * 64},
            }
        return {**answer, "server_certificate_chain": answer["chain"]}

    proxy = EnrollmentProxy(kms.url)
    proxy.tamper = rewrite
    try:
        result = kms.cli(
            "enroll", "--url", proxy.url, f"--token={token}", "--ca-cert", kms.root_file,
            "--out", kms.tmp_path / "billing",
        )  # fmt: skip
    finally:
        proxy.close()
    del other
    assert result.returncode == 1
    assert "bad_server_mac" in result.stderr
    assert not (kms.tmp_path / "billing" / "kmsclient.json").exists()
