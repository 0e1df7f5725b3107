"""The operations API end to end: the kmsclient library and CLI against a live server over
plain HTTP (real views, real database), with the traffic recorded."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from audit.models import AuditEvent
from kmsclient.client import KMSClientError
from tests.distribution.conftest import LiveKMS
from vault import clients, services
from vault.models import Client, Grant, SymmetricKey
from vault.sessions import operation_sessions_forget

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ALL = "encrypt,decrypt,reencrypt,generate-data-key,mac,mac-verify,sign,verify,public-key"


def grant(name: str, key: SymmetricKey, operations: str = ALL) -> None:
    Grant.objects.create(
        client=Client.objects.get(name=name), key=key, operations=operations, created_by_name="t"
    )


class Recorder(requests.Session):
    """Keeps the bytes of every request and response body, headers included."""

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[bytes] = []
        self.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args, **kwargs) -> None:
        request = response.request
        self.last_url, self.last_body = request.url, request.body
        self.last_content_type = request.headers.get("Content-Type", "")
        self.wire.append(f"{request.method} {request.url} {request.headers}".encode())
        self.wire.append(request.body or b"")
        self.wire.append(str(response.headers).encode() + response.content)

    def captured(self) -> bytes:
        return b"\n".join(self.wire)


def forms(secret: bytes) -> list[bytes]:
    """The ways a secret could show in a capture: raw, base64, base64url, hex."""
    return [
        secret,
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
    ]


def test_plaintext_and_data_keys_never_cross_the_wire_in_clear(kms: LiveKMS) -> None:
    assert kms.url.startswith("http://")  # plain HTTP: no TLS to hide anything
    key = kms.key("orders", key_type="aes-256-gcm")
    recorder = Recorder()
    client = kms.enrolled("svc", session=recorder)
    grant("svc", key)
    plaintext = b"4111-1111-1111-1111 exp 12/29 cvv 123 -- very secret"
    ciphertext = client.encrypt("orders", plaintext, {"tenant": "acme"})
    assert client.decrypt("orders", ciphertext, {"tenant": "acme"}) == plaintext
    data_key = client.generate_data_key("orders", {"file": "a.bin"})
    assert len(data_key.plaintext) == 32
    assert client.decrypt("orders", data_key.ciphertext, {"file": "a.bin"}) == data_key.plaintext
    captured = recorder.captured()
    assert b"/api/v1/session" in captured and b"/api/v1/keys/encrypt" in captured
    for secret in (plaintext, data_key.plaintext):
        for form in forms(secret):
            assert form not in captured
    # Not even the ciphertext token crosses in clear: the whole request is sealed.
    assert ciphertext.encode() not in captured


def test_round_trips_of_every_operation_and_type(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    aes = kms.key("aes", key_type="aes-256-gcm")
    hmac_key = kms.key("hmac", key_type="hmac-sha256")
    signers = [kms.key(t, key_type=t) for t in ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072")]
    for key in (aes, hmac_key, *signers):
        grant("svc", key)
    assert client.ping() == "svc"
    token = client.encrypt("aes", b"x" * 1024)
    assert client.decrypt("aes", token) == b"x" * 1024
    mac = client.mac("hmac", b"m")
    assert client.mac_verify("hmac", b"m", mac) and not client.mac_verify("hmac", b"n", mac)
    for key in signers:
        signature = client.sign(key.name, b"release")
        assert client.verify(key.name, b"release", signature)
        assert not client.verify(key.name, b"releasE", signature)
        assert client.public_key(key.name).startswith("-----BEGIN PUBLIC KEY-----")
    rsa_token = client.encrypt("rsa-3072", b"short secret")
    assert client.decrypt("rsa-3072", rsa_token) == b"short secret"


def test_client_without_decrypt_is_refused(kms: LiveKMS) -> None:
    client = kms.enrolled("writer")
    grant("writer", kms.key("orders"), "encrypt")
    token = client.encrypt("orders", b"x")
    with pytest.raises(KMSClientError) as caught:
        client.decrypt("orders", token)
    assert caught.value.code == "operation_not_granted" and caught.value.status == 403


def test_context_mismatch_and_destroyed_version(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    key = kms.key("orders")
    grant("svc", key)
    token = client.encrypt("orders", b"x", {"a": "1"})
    with pytest.raises(KMSClientError) as caught:
        client.decrypt("orders", token, {"a": "2"})
    assert caught.value.code == "decryption_failed"
    services.symmetric_key_rotate(actor=None, key=key)
    from vault.models import KeyVersion

    KeyVersion.objects.filter(key=key, number=1).update(state="destroyed", sealed_material=None)
    with pytest.raises(KMSClientError) as caught:
        client.decrypt("orders", token, {"a": "1"})
    assert caught.value.code == "version_destroyed"


def test_reencrypt_moves_to_the_newest_version(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    key = kms.key("orders")
    grant("svc", key)
    old = client.encrypt("orders", b"keep me", {"a": "1"})
    services.symmetric_key_rotate(actor=None, key=key)
    new = client.reencrypt("orders", old, {"a": "1"})
    from kmsportal.crypto.operations import parse_token

    assert (parse_token(old).version, parse_token(new).version) == (1, 2)
    assert client.decrypt("orders", new, {"a": "1"}) == b"keep me"


def test_sessions_survive_another_worker_and_refuse_replays(kms: LiveKMS) -> None:
    recorder = Recorder()
    client = kms.enrolled("svc", session=recorder)
    grant("svc", kms.key("orders"))
    client.encrypt("orders", b"x")
    # Another worker has never seen the session: it unseals the key from the database.
    operation_sessions_forget()
    client.encrypt("orders", b"y")
    # A replayed request (same frame, same counter) is refused, in the binary frame...
    assert recorder.last_content_type == "application/vnd.kmsportal.sealed"
    response = requests.post(
        recorder.last_url,
        data=recorder.last_body,
        headers={"Content-Type": recorder.last_content_type},
        timeout=10,
    )
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/vnd.kmsportal.sealed"
    # ...and in the JSON envelope.
    client.operate("encrypt", "orders", [{"plaintext": b"z"}], framing="json")
    assert recorder.last_content_type == "application/json"
    response = requests.post(
        recorder.last_url,
        data=recorder.last_body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 409 and set(response.json()) == {"nonce", "ciphertext"}


def test_suspended_client_is_refused_at_once(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    grant("svc", kms.key("orders"))
    client.encrypt("orders", b"x")
    clients.client_suspend(actor=None, client=Client.objects.get(name="svc"))
    with pytest.raises(KMSClientError) as caught:
        client.encrypt("orders", b"x")
    assert caught.value.code == "client_suspended"


def test_batch_is_one_audit_event(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    grant("svc", kms.key("bulk"))
    before = AuditEvent.objects.filter(action="key.operation").count()
    items = [{"plaintext": b"%04d" % i} for i in range(1000)]
    results = client.operate("encrypt", "bulk", items)
    assert len(results) == 1000 and all("ciphertext" in r for r in results)
    assert AuditEvent.objects.filter(action="key.operation").count() == before + 1
    # Base64 text, as the JSON envelope takes it, is still accepted by `operate`.
    text = [{"plaintext": base64.b64encode(b"%04d" % i).decode()} for i in range(3)]
    tokens = [r["ciphertext"] for r in client.operate("encrypt", "bulk", text)]
    decrypted = client.operate("decrypt", "bulk", [{"ciphertext": t} for t in tokens])
    assert [r["plaintext"] for r in decrypted] == [b"0000", b"0001", b"0002"]


def test_cli_round_trip_with_context(kms: LiveKMS) -> None:
    kms.enrolled("svc")
    grant("svc", kms.key("orders"))
    grant("svc", kms.key("signer", key_type="ed25519"))
    directory = str(kms.tmp_path / "svc")
    encrypted = kms.cli("encrypt", "orders", "--dir", directory, "--context", "t=a", input="hello")
    assert encrypted.returncode == 0, encrypted.stderr
    token = encrypted.stdout.strip()
    assert token.startswith("kms:v1:")
    decrypted = kms.cli("decrypt", "orders", "--dir", directory, "--context", "t=a", input=token)
    assert (decrypted.returncode, decrypted.stdout) == (0, "hello")
    wrong = kms.cli("decrypt", "orders", "--dir", directory, "--context", "t=b", input=token)
    assert wrong.returncode == 1 and "decryption_failed" in wrong.stderr
    datakey = kms.cli("datakey", "orders", "--dir", directory)
    assert set(json.loads(datakey.stdout)) == {"key", "version", "ciphertext", "plaintext"}
    signed = kms.cli("sign", "signer", "--dir", directory, input="release")
    signature = signed.stdout.strip()
    ok = kms.cli("verify", "signer", "--dir", directory, "--signature", signature, input="release")
    bad = kms.cli("verify", "signer", "--dir", directory, "--signature", signature, input="x")
    assert (ok.returncode, bad.returncode) == (0, 1)


def test_an_operations_only_grant_cannot_fetch(kms: LiveKMS) -> None:
    client = kms.enrolled("svc")
    grant("svc", kms.key("orders"), "encrypt,decrypt")
    with pytest.raises(KMSClientError) as caught:
        client.fetch_key("orders")
    assert caught.value.code == "operation_not_granted"
    event = AuditEvent.objects.filter(action="key.fetch_refused").order_by("-sequence").first()
    assert event.details["code"] == "operation_not_granted"


def test_the_envelope_encryption_example_of_the_docs_works(
    kms: LiveKMS, tmp_path, monkeypatch
) -> None:
    """The documented example, run as written against the live KMS (only the identity
    directory differs)."""
    import re
    from pathlib import Path

    kms.enrolled("billing")
    grant("billing", kms.key("files"), "generate-data-key,decrypt")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations-api.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", doc, re.S)
    work = tmp_path / "work"
    work.mkdir()
    (work / "report.pdf").write_bytes(b"%PDF-1.7 quarterly figures")
    monkeypatch.chdir(work)
    namespace: dict = {}
    exec(example.replace("/etc/billing/kms", str(kms.tmp_path / "billing")), namespace)  # noqa: S102
    assert namespace["plaintext"] == b"%PDF-1.7 quarterly figures"
    assert b"quarterly" not in (work / "report.pdf.enc").read_bytes()
    assert (work / "report.pdf.key").read_text().startswith("kms:v1:")


def test_revoking_the_certificate_ends_the_session(kms: LiveKMS) -> None:
    from pki.services import certificate_revoke

    client = kms.enrolled("svc")
    grant("svc", kms.key("orders"))
    client.encrypt("orders", b"x")
    record = Client.objects.select_related("certificate").get(name="svc").certificate
    certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    with pytest.raises(KMSClientError) as caught:
        client.encrypt("orders", b"x")
    assert caught.value.code == "certificate_revoked"
