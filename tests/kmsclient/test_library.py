"""kmsclient's library and CLI without the portal: identity directories, file modes, problem
documents, and every client-side check against a small stand-in KMS.

The stand-in speaks the real protocol (``kmsportal.crypto.protocol``) over real HTTP on
loopback with a real CA hierarchy (root -> server-identity CA -> kms-server certificate naming
a deployment) and real stapled OCSP responses, so the client's chain, server identity,
status and signature checks run exactly as against the portal; only the portal's own checks
(grants, replay, ...) are absent. Those are covered by tests/distribution against a live
server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from kmsclient.cli import main
from kmsclient.client import KMSClient, KMSClientError, enroll, problem_error
from kmsclient.identity import (
    IdentityError,
    load_identity,
    resolve_identity_dir,
    write_secret_file,
)
from kmsportal.crypto import protocol
from kmsportal.crypto.ocsp import build_ocsp_response, parse_ocsp_request
from kmsportal.crypto.server_identity import spki_sha256
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    build_certificate,
    generate_private_key,
    get_profile,
    load_csr,
    parse_san,
    parse_subject,
)

KEY = bytes(range(32))
TOKEN = "0123456789abcdef" * 4
DEPLOYMENT = "urn:kmsportal:deployment:12345678-1234-4123-8123-123456789abc"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class _CA:
    name: str
    key: Any
    certificate: x509.Certificate
    revoked: set[int] = field(default_factory=set)

    @property
    def signer(self) -> LoadedKeySigner:
        return LoadedKeySigner(self.key)


class FakeKMS:
    """Root CA -> issuing (server-identity) CA -> kms-server certificate; enroll and fetch
    over HTTP, with the server's status stapled (``status_mode``)."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.kms = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.requests: list[tuple[str, str]] = []
        self.problem: tuple[int, dict[str, Any], dict[str, str]] | None = None
        self.tamper: str | None = None
        self.status_mode = "good"  # good | missing | stale | revoked | wrong-signer | garbage
        self.status_age = timedelta(seconds=5)
        self.keys = {"orders-db": KEY}
        self.root = self._ca("root", None)
        self.issuing = self._ca("issuing", self.root)
        self.server_key = generate_private_key("ecp256")
        self.server_certificate = self._leaf(
            self.server_key, "kms-server", "CN=kms server", ["dns:localhost", f"uri:{DEPLOYMENT}"]
        )
        self.client_key = generate_private_key("ecp256")
        self.client_certificate = self._leaf(
            self.client_key, "kms-client", "CN=billing", ["uri:urn:kmsportal:client:billing"]
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _ca(self, name: str, parent: _CA | None) -> _CA:
        key = generate_private_key("ecp256")
        certificate = build_ca_certificate(
            subject=parse_subject(f"CN=Fake {name} CA"),
            public_key=key.public_key(),
            signer=LoadedKeySigner(parent.key if parent else key),
            issuer_certificate=parent.certificate if parent else None,
            days=30 if parent is None else 29,  # an intermediate may not outlive its parent
            path_length=None if parent is None else 0,
            crl_distribution_url=f"{self.url}/pki/crl/{parent.name}.crl" if parent else None,
        )
        return _CA(name, key, certificate)

    def _leaf(self, key: Any, profile: str, subject: str, sans: list[str]) -> x509.Certificate:
        return build_certificate(
            subject=parse_subject(subject),
            public_key=key.public_key() if hasattr(key, "public_key") else key,
            sans=[parse_san(s) for s in sans],
            profile=get_profile(profile),
            issuer_certificate=self.issuing.certificate,
            signer=self.issuing.signer,
            crl_distribution_url=f"{self.url}/pki/crl/{self.issuing.name}.crl",
            ca_issuers_url=f"{self.url}/pki/ca/{self.issuing.name}.crt",
            ocsp_url=f"{self.url}/pki/ocsp/{self.issuing.name}",
            days=30,
        )

    @property
    def chain(self) -> list[str]:
        return [
            _pem(c)
            for c in (self.server_certificate, self.issuing.certificate, self.root.certificate)
        ]

    @property
    def pin(self) -> dict[str, str]:
        return {"ca_spki_sha256": spki_sha256(self.issuing.certificate), "deployment": DEPLOYMENT}

    def client(self, **kwargs: Any) -> KMSClient:
        kwargs.setdefault("server_ca_spki_sha256", self.pin["ca_spki_sha256"])
        kwargs.setdefault("deployment", DEPLOYMENT)
        return KMSClient(
            self.url, self.client_certificate, self.client_key, self.root.certificate, **kwargs
        )

    def staple(self) -> bytes:
        """The OCSP response for the server certificate, as `status_mode` says."""
        if self.status_mode == "garbage":
            return b"not an OCSP response"
        # A forged staple: made by a CA of the same name with another key.
        signer_ca = self._ca("issuing", self.root) if self.status_mode == "wrong-signer" else None
        issuer = (signer_ca or self.issuing).certificate
        request = (
            x509.ocsp.OCSPRequestBuilder()
            .add_certificate(self.server_certificate, issuer, hashes.SHA256())
            .build()
        )
        parsed = parse_ocsp_request(request.public_bytes(serialization.Encoding.DER))
        now = datetime.now(UTC).replace(microsecond=0)
        age = timedelta(minutes=11) if self.status_mode == "stale" else self.status_age
        this_update = now - age
        revoked = self.status_mode == "revoked"
        return build_ocsp_response(
            parsed_request=parsed,
            issuer_certificate=issuer,
            responder_certificate=issuer,
            signer=(signer_ca or self.issuing).signer,
            status="revoked" if revoked else "good",
            revocation_time=now - timedelta(minutes=1) if revoked else None,
            revocation_reason="keyCompromise" if revoked else None,
            this_update=this_update,
            next_update=this_update + timedelta(hours=1),
            subject_certificate=None,
        )

    def write_identity(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "client.crt").write_text(_pem(self.client_certificate))
        write_secret_file(directory / "client.key", _key_pem(self.client_key))
        (directory / "ca.pem").write_text(_pem(self.root.certificate))
        (directory / "chain.pem").write_text("".join(self.chain[1:]))
        config = {
            "url": self.url,
            "client": "billing",
            "cert": "client.crt",
            "key": "client.key",
            "chain": "chain.pem",
            "ca_cert": "ca.pem",
            "server_identity": self.pin,
        }
        (directory / "kmsclient.json").write_text(json.dumps(config))
        return directory

    # -- request handling

    def fetch(self, body: Any) -> tuple[int, dict[str, Any]]:
        # The stand-in checks the signature only (not the timestamp): the clock tests move
        # the client's clock, not the server's.
        request, signature = protocol.FetchRequest.from_json(body)
        protocol.verify_fetch_request_signature(
            request, signature, self.client_certificate.public_key()
        )
        response = protocol.build_fetch_response(
            request=request,
            request_signature=signature,
            key_name=request.key_name,
            version=request.version or 1,
            client_name="billing",
            key_material=self.keys[request.key_name],
            server_private_key=self.server_key,
            server_chain_pems=self.chain,
            server_status=b"\x00" if self.status_mode == "missing" else self.staple(),
        )
        if self.status_mode == "missing":
            del response["server_status"]
        if self.tamper == "swap-ephemeral":
            attacker = x25519.X25519PrivateKey.generate().public_key()
            response["server_public"] = base64.b64encode(attacker.public_bytes_raw()).decode()
        return 200, response

    def enroll(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = protocol.parse_enroll_request(body)
        token_id, mac_key = protocol.enrollment_token_keys(TOKEN)
        if request.token_id != token_id:
            return 401, _problem(
                "invalid_token", "the enrollment token is unknown or already used", 401
            )
        protocol.verify_enroll_request(request, mac_key)
        csr = load_csr(request.csr_pem.encode())
        leaf = self._leaf(
            csr.public_key(), "kms-client", "CN=billing", ["uri:urn:kmsportal:client:billing"]
        )
        chain = [_pem(leaf), _pem(self.issuing.certificate), _pem(self.root.certificate)]
        return 201, protocol.build_enroll_response(
            request=request,
            mac_key=mac_key,
            answer={
                "client": "billing",
                "certificate": chain[0],
                "chain": chain,
                "root_ca_certificate": chain[-1],
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "server_identity": self.pin,
            },
            server_private_key=self.server_key,
            server_chain_pems=self.chain,
        )


def _problem(code: str, detail: str, status: int) -> dict[str, Any]:
    return {
        "type": f"https://kmsportal.invalid/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    @property
    def kms(self) -> FakeKMS:
        return self.server.kms  # type: ignore[attr-defined]

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.kms.requests.append(("GET", self.path))
        self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        self.kms.requests.append(("POST", self.path))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.kms.problem is not None:
            status, document, headers = self.kms.problem
            self._send(status, json.dumps(document).encode(), "application/problem+json", headers)
            return
        if self.path == "/api/v1/keys/fetch":
            status, answer = self.kms.fetch(body)
        elif self.path == "/api/v1/enroll":
            status, answer = self.kms.enroll(body)
        else:
            self._send(404, b"<html>no such page</html>", "text/html")
            return
        content_type = "application/json" if status < 400 else "application/problem+json"
        self._send(status, json.dumps(answer).encode(), content_type)


@pytest.fixture
def kms() -> Iterator[FakeKMS]:
    fake = FakeKMS()
    yield fake
    fake.close()


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    response.url = "http://kms.example/api/v1/keys/fetch"
    response.reason = {403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway"}.get(
        status, ""
    )
    return response


# --- identity directories and file modes -----------------------------------------------


def test_identity_dir_is_the_option_else_the_environment_else_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_identity_dir("/opt/a", {"KMSCLIENT_DIR": "/opt/b"}) == Path("/opt/a")
    assert resolve_identity_dir(None, {"KMSCLIENT_DIR": "/opt/b"}) == Path("/opt/b")
    assert resolve_identity_dir(None, {"KMSCLIENT_DIR": ""}) == tmp_path
    assert resolve_identity_dir(None, {}) == tmp_path
    monkeypatch.setenv("KMSCLIENT_DIR", "/opt/c")
    assert resolve_identity_dir() == Path("/opt/c")


def test_a_missing_identity_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="run `python -m kmsclient enroll` first"):
        load_identity(tmp_path)
    (tmp_path / "kmsclient.json").write_text('{"url": "http://x"}')
    with pytest.raises(IdentityError, match="lacks: client, cert, key, chain, ca_cert"):
        load_identity(tmp_path)


def test_secret_files_are_0600_and_never_silently_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "key.bin"
    write_secret_file(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_secret_file(path, b"two")
    assert path.read_bytes() == b"one"
    path.chmod(0o644)  # a replaced file must not keep a wider mode
    write_secret_file(path, b"three", force=True)
    assert path.read_bytes() == b"three"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.bin"]


# --- problem documents ------------------------------------------------------------------


def test_a_problem_document_becomes_one_line_naming_the_reason() -> None:
    document = _problem("no_grant", "client billing has no grant for key 'x'", 403)
    error = problem_error(_response(403, json.dumps(document).encode()))
    assert (error.code, error.origin, error.status) == ("no_grant", "server", 403)
    assert str(error) == "refused by server: no_grant: client billing has no grant for key 'x'"

    document = _problem("rate_limited", "more than 3 requests\nin 60 s", 429)
    error = problem_error(_response(429, json.dumps(document).encode(), {"Retry-After": "17"}))
    assert error.retry_after == 17
    assert str(error) == "refused by server: rate_limited: more than 3 requests in 60 s"
    assert "\n" not in str(error)


def test_an_answer_that_is_not_a_problem_document_is_named_as_such() -> None:
    error = problem_error(_response(502, b"<html><h1>Bad gateway</h1></html>"))
    assert error.code == "unexpected_response"
    assert "HTTP 502 Bad Gateway without a problem document" in str(error)
    error = problem_error(_response(403, b'{"detail": "no code"}'))
    assert error.code == "unexpected_response"


# --- fetching: the client's own checks ------------------------------------------------------


def test_fetch_checks_the_chain_and_the_stapled_status_without_any_download(
    kms: FakeKMS,
) -> None:
    client = kms.client()
    fetched = client.fetch("orders-db")
    assert (fetched.key_name, fetched.version, fetched.material) == ("orders-db", 1, KEY)
    assert "material" not in repr(fetched) and KEY.hex() not in repr(fetched)
    assert client.fetch_key("orders-db", group="ffdhe3072") == KEY
    assert kms.requests == [("POST", "/api/v1/keys/fetch")] * 2, "no CRL, no OCSP request"


@pytest.mark.parametrize(
    ("mode", "code", "reason"),
    [
        ("missing", "bad_server_status", "carries no stapled status"),
        ("garbage", "bad_server_status", "not an OCSP response"),
        ("wrong-signer", "bad_server_status", "not signed by the pinned server-identity CA"),
        ("stale", "stale_server_status", "older than the 600 s this client accepts"),
        ("revoked", "server_certificate_revoked", "was revoked on"),
    ],
)
def test_a_stapled_status_that_is_missing_forged_stale_or_revoked_is_a_refusal(
    kms: FakeKMS, mode: str, code: str, reason: str
) -> None:
    kms.status_mode = mode
    with pytest.raises(KMSClientError) as caught:
        kms.client().fetch("orders-db")
    assert caught.value.code == code
    assert reason in str(caught.value)


def test_the_maximum_status_age_is_the_clients_choice(kms: FakeKMS) -> None:
    kms.status_age = timedelta(minutes=3)
    assert kms.client().fetch_key("orders-db") == KEY  # default 10 minutes
    with pytest.raises(KMSClientError) as caught:
        kms.client(max_status_age=120).fetch("orders-db")
    assert caught.value.code == "stale_server_status"
    # A client whose clock runs 20 minutes ahead sees the status as too old.
    ahead = kms.client(clock=lambda: datetime.now(UTC) + timedelta(minutes=20))
    with pytest.raises(KMSClientError) as caught:
        ahead.fetch("orders-db")
    assert caught.value.code == "stale_server_status"


def test_a_client_without_a_pinned_server_identity_refuses_and_says_how_to_fix_it(
    kms: FakeKMS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KMSClientError) as caught:
        kms.client(server_ca_spki_sha256=None, deployment=None).fetch("orders-db")
    assert caught.value.code == "untrusted_server_identity"
    assert "pin-server" in str(caught.value) and "enroll again" in str(caught.value)
    assert kms.requests == [], "nothing is sent without a pin"

    identity = kms.write_identity(tmp_path / "old")
    config = json.loads((identity / "kmsclient.json").read_text())
    del config["server_identity"]
    (identity / "kmsclient.json").write_text(json.dumps(config))
    assert main(["fetch", "orders-db", "--stdout", "--dir", str(identity)]) == 1
    assert "pin-server --dir" in capsys.readouterr().err
    spki = kms.pin["ca_spki_sha256"]
    colons = ":".join(spki[i : i + 2] for i in range(0, 64, 2)).upper()
    args = ["pin-server", "--dir", str(identity), "--deployment", DEPLOYMENT]
    assert main([*args, "--server-ca-spki", "nothex"]) == 2
    assert main([*args, "--server-ca-spki", colons]) == 0
    assert load_identity(identity).server_ca_spki_sha256 == spki
    assert main(["fetch", "orders-db", "--stdout", "--dir", str(identity)]) == 0


def test_a_swapped_server_ephemeral_key_is_refused(kms: FakeKMS) -> None:
    kms.tamper = "swap-ephemeral"
    with pytest.raises(KMSClientError) as caught:
        kms.client().fetch("orders-db")
    assert caught.value.code == "bad_server_signature"


def test_a_server_certificate_without_the_kms_server_profile_is_refused(kms: FakeKMS) -> None:
    # The client's own certificate (clientAuth) is a perfectly valid chain to the root.
    kms.server_key = kms.client_key
    kms.server_certificate = kms.client_certificate
    with pytest.raises(KMSClientError) as caught:
        kms.client().fetch("orders-db")
    assert caught.value.code == "untrusted_server_identity"
    assert "serverAuth" in str(caught.value)


def test_a_server_chain_to_another_root_is_refused(kms: FakeKMS) -> None:
    other = FakeKMS()
    try:
        client = KMSClient(
            kms.url,
            kms.client_certificate,
            kms.client_key,
            other.root.certificate,
            server_ca_spki_sha256=other.pin["ca_spki_sha256"],
            deployment=DEPLOYMENT,
        )
        with pytest.raises(KMSClientError) as caught:
            client.fetch("orders-db")
    finally:
        other.close()
    assert caught.value.code == "untrusted_server_identity"
    # Same CA names, other keys: the path is built by name, the signatures give it away.
    assert str(caught.value).startswith(
        "untrusted_server_identity: the server certificate 'CN=kms server' is not trusted: "
    )
    assert "does not verify" in str(caught.value)


def test_server_refusals_and_unreachable_servers(kms: FakeKMS) -> None:
    kms.problem = (429, _problem("rate_limited", "retry in 9 s", 429), {"Retry-After": "9"})
    with pytest.raises(KMSClientError) as caught:
        kms.client().fetch("orders-db")
    assert str(caught.value) == "refused by server: rate_limited: retry in 9 s"
    assert caught.value.retry_after == 9
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KMSClient(
        f"http://127.0.0.1:{port}",
        kms.client_certificate,
        kms.client_key,
        kms.root.certificate,
        server_ca_spki_sha256=kms.pin["ca_spki_sha256"],
        deployment=DEPLOYMENT,
    )
    with pytest.raises(KMSClientError) as caught:
        client.fetch("orders-db")
    assert caught.value.code == "connection_failed"


def test_a_key_that_does_not_match_the_certificate_is_refused_locally(kms: FakeKMS) -> None:
    with pytest.raises(IdentityError, match="does not belong"):
        KMSClient(kms.url, kms.client_certificate, kms.server_key, kms.root.certificate)


def test_bad_key_names_are_refused_before_anything_is_sent(kms: FakeKMS) -> None:
    with pytest.raises(KMSClientError) as caught:
        kms.client().fetch("Orders DB")
    assert caught.value.code == "bad_key_name"
    assert kms.requests == []


# --- enrollment -------------------------------------------------------------------------


def test_enroll_stores_a_0600_key_and_the_pinned_chain(kms: FakeKMS, tmp_path: Path) -> None:
    root = tmp_path / "root.der"
    root.write_bytes(kms.root.certificate.public_bytes(serialization.Encoding.DER))
    out = tmp_path / "identity"
    identity = enroll(kms.url + "/", TOKEN, root, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == [
        "ca.pem",
        "chain.pem",
        "client.crt",
        "client.key",
        "kmsclient.json",
    ]
    config = json.loads((out / "kmsclient.json").read_text())
    assert config == {
        "url": kms.url,
        "client": "billing",
        "not_after": identity.not_after,
        "cert": "client.crt",
        "key": "client.key",
        "chain": "chain.pem",
        "ca_cert": "ca.pem",
        "server_identity": kms.pin,  # learned at enrollment, authenticated by the token
    }
    assert x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()) == kms.root.certificate
    assert len(x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())) == 3
    assert load_identity(out) == identity

    with pytest.raises(IdentityError, match="already holds an identity"):
        enroll(kms.url, TOKEN, root, out)
    key_before = (out / "client.key").read_bytes()
    with pytest.raises(KMSClientError, match="refused by server: invalid_token"):
        enroll(kms.url, "f" * 64, root, out, force=True)
    assert (out / "client.key").read_bytes() == key_before, (
        "a failed re-enrollment keeps the old key"
    )
    assert sorted(p.name for p in out.iterdir())[-1] == "kmsclient.json"
    enroll(kms.url, TOKEN, root, out, force=True, key_type="rsa2048")
    assert (out / "client.key").read_bytes() != key_before


def test_enroll_refuses_a_root_other_than_the_pinned_one(kms: FakeKMS, tmp_path: Path) -> None:
    other = FakeKMS()
    other.close()
    pinned = tmp_path / "root.pem"
    pinned.write_text(_pem(other.root.certificate))
    out = tmp_path / "identity"
    with pytest.raises(KMSClientError) as caught:
        enroll(kms.url, TOKEN, pinned, out)
    assert caught.value.code == "root_mismatch"
    assert "is not the root you pinned with --ca-cert" in str(caught.value)
    assert list(out.iterdir()) == [], "no key is left behind"


def test_enroll_refuses_a_leaf_as_the_pinned_root(kms: FakeKMS, tmp_path: Path) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(_pem(kms.server_certificate))
    with pytest.raises(IdentityError, match="not a CA certificate"):
        enroll(kms.url, TOKEN, leaf, tmp_path / "identity")


# --- the command line --------------------------------------------------------------------


def test_cli_never_prints_a_key_without_stdout(
    kms: FakeKMS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = kms.write_identity(tmp_path / "id")
    assert main(["fetch", "orders-db", "--dir", str(identity)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: say where the key goes: --out FILE")
    assert kms.requests == [], "nothing is fetched when there is nowhere to put it"


def test_cli_fetch_to_a_file_and_to_stdout(
    kms: FakeKMS,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = kms.write_identity(tmp_path / "id")
    out = tmp_path / "orders.key"
    assert main(["fetch", "orders-db", "--dir", str(identity), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.read_bytes() == KEY and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert captured.out.strip() == f"fetched orders-db version 1 (32 bytes) into {out}"
    for form in (KEY.hex(), base64.b64encode(KEY).decode()):
        assert form not in captured.out + captured.err

    assert main(["fetch", "orders-db", "--dir", str(identity), "--out", str(out)]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    out.write_bytes(b"old")
    assert main(["fetch", "orders-db", "--dir", str(identity), "--out", str(out), "--force"]) == 0
    assert out.read_bytes() == KEY

    monkeypatch.setenv("KMSCLIENT_DIR", str(identity))  # found without --dir
    capsys.readouterr()
    assert main(["fetch", "orders-db", "--stdout", "--group", "ffdhe3072"]) == 0
    captured = capsys.readouterr()
    assert base64.b64decode(captured.out.strip()) == KEY
    assert captured.out.count("\n") == 1


def test_cli_exit_status_names_the_reason_in_one_line(
    kms: FakeKMS,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = kms.write_identity(tmp_path / "id")
    monkeypatch.chdir(identity)  # found in the current directory
    kms.problem = (403, _problem("no_grant", "client billing has no grant for key 'x'", 403), {})
    assert main(["fetch", "x", "--stdout"]) == 1
    err = capsys.readouterr().err
    assert err == "error: refused by server: no_grant: client billing has no grant for key 'x'\n"

    kms.problem = None
    kms.status_mode = "stale"
    assert main(["fetch", "orders-db", "--stdout"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: rejected the KMS's response: the stapled status")
    assert captured.err.count("\n") == 1
    assert main(["fetch", "orders-db", "--stdout", "--max-status-age", "1200"]) == 0
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    assert main(["fetch", "orders-db", "--stdout"]) == 2
    assert "no client identity in" in capsys.readouterr().err
    assert main(["fetch", "orders-db", "--stdout", "--out", "x"]) == 2  # mutually exclusive
    assert main(["fetch", "orders-db", "--version", "0", "--stdout"]) == 2


def test_cli_enroll(kms: FakeKMS, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root.pem"
    root.write_text(_pem(kms.root.certificate))
    out = tmp_path / "id"
    args = ["enroll", "--url", kms.url, "--ca-cert", str(root), "--out", str(out)]
    assert main([*args, "--token", "f" * 64]) == 1
    assert capsys.readouterr().err.startswith("error: refused by server: invalid_token: ")
    assert main([*args, "--token=-looks-like-an-option"]) == 2  # not even sent
    assert "64 hex digits" in capsys.readouterr().err
    assert kms.requests == [("POST", "/api/v1/enroll")]
    assert main([*args, "--token", TOKEN]) == 0
    assert capsys.readouterr().out.startswith(f"enrolled as billing: identity stored in {out}")
    assert os.stat(out / "client.key").st_mode & 0o077 == 0
    assert (
        main(
            [
                "enroll",
                "--url",
                kms.url,
                "--ca-cert",
                str(tmp_path / "nope.pem"),
                "--out",
                str(tmp_path / "x"),
                "--token",
                TOKEN,
            ]
        )
        == 2
    )
    assert "cannot read the root CA certificate" in capsys.readouterr().err


def test_the_client_runs_without_django() -> None:
    """Importing the library and the CLI loads no Django module (the machine of a client
    service has no portal installed)."""
    code = (
        "import sys, kmsclient.client, kmsclient.cli; "
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
