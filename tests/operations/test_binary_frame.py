"""The binary frame over real HTTP (live server, real session, real database): what is
malformed is refused whole with a problem document and changes nothing (no counter spent,
no key operation, no audit event of one); the binary and JSON framings read each other's
tokens and give the same per-item errors."""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.models import AuditEvent
from kmsclient.client import KMSClient
from kmsportal.crypto import batch_frame, session
from tests.distribution.conftest import LiveKMS
from vault.models import Client, Grant

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SEALED = "application/vnd.kmsportal.sealed"
LABEL = b"kmsportal operations session v1"
ENCRYPT = "/api/v1/keys/encrypt"


def F(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def plaintext(header: object, *fields: bytes, lengths: list[int] | None = None) -> bytes:
    """The documented sealed plaintext: uint32 header length, JSON header, uint32 field
    count, one uint32 length per field, the fields' bytes (`lengths` to lie about them)."""
    encoded = json.dumps(header).encode()
    lengths = [len(field) for field in fields] if lengths is None else lengths
    return (
        struct.pack(">I", len(encoded))
        + encoded
        + struct.pack(">I", len(lengths))
        + b"".join(struct.pack(">I", n) for n in lengths)
        + b"".join(fields)
    )


@dataclass
class Wire:
    """A client's live session, and frames written by hand from the documentation."""

    url: str
    keys: session.SessionKeys
    client: KMSClient
    counter: int
    served: int = 0  # key operations done (and audited) through hand-made frames

    def frame(self, plain: bytes, *, operation: str = "encrypt", counter: int | None = None):
        counter = self.counter if counter is None else counter
        nonce = os.urandom(12)
        aad = (
            LABEL
            + b"|binary-request|\x01"
            + F(self.keys.session_id)
            + F(operation.encode())
            + struct.pack(">Q", counter)
        )
        sealed = AESGCM(self.keys.client_to_server).encrypt(nonce, plain, aad)
        body = b"\x01" + self.keys.session_id + struct.pack(">Q", counter) + nonce + sealed
        return body, nonce

    def post(self, body: bytes, content_type: str = SEALED, path: str = ENCRYPT):
        return requests.post(
            self.url + path, data=body, headers={"Content-Type": content_type}, timeout=30
        )

    def good(self, count: int = 2, counter: int | None = None) -> tuple[bytes, bytes]:
        header = {"key": "orders", "items": [{}] * count, "options": {}}
        return self.frame(plaintext(header, *[b"x" * 1024] * count), counter=counter)


@pytest.fixture
def wire(kms: LiveKMS) -> Iterator[Wire]:
    client = kms.enrolled("svc")
    key = kms.key("orders")
    Grant.objects.create(
        client=Client.objects.get(name="svc"),
        key=key,
        operations="encrypt,decrypt",
        created_by_name="t",
    )
    assert client.ping() == "svc"  # opens the session (binary frame, counter 1)
    current = client._operations_local().session
    hand_made = current.counter + 1
    current.counter += 100  # the library's own requests come after the hand-made ones
    yield Wire(kms.url, current.keys, client, hand_made)


def operations_audited() -> int:
    return AuditEvent.objects.filter(action__startswith="key.operation").count()


def assert_refused_and_nothing_changed(wire: Wire, response, status: int, code: str) -> None:
    """A plain problem document with `code`; no key operation was recorded, and the counter
    was not spent: a good frame with the very same counter is then served."""
    assert response.status_code == status, response.content[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert operations_audited() == wire.served  # nothing recorded for the refused frame
    body, nonce = wire.good(counter=wire.counter)
    served = wire.post(body)
    assert served.status_code == 200 and served.headers["Content-Type"] == SEALED
    status_inner, answer = batch_frame.open_response(
        wire.keys, "encrypt", wire.counter, nonce, served.content
    )
    assert status_inner == 200 and len(answer["results"]) == 2
    wire.served += 1
    wire.counter += 1
    assert operations_audited() == wire.served
    event = AuditEvent.objects.filter(action="key.operation").order_by("-sequence").first()
    assert (event.details["count"], event.outcome) == (2, "success")


def test_a_frame_written_from_the_documentation_is_served(wire: Wire) -> None:
    body, nonce = wire.good(count=3)
    response = wire.post(body)
    assert response.status_code == 200
    status, answer = batch_frame.open_response(
        wire.keys, "encrypt", wire.counter, nonce, response.content
    )
    assert status == 200
    tokens = [result["ciphertext"] for result in answer["results"]]
    assert all(token.startswith("kms:v1:") for token in tokens)
    assert wire.client.decrypt("orders", tokens[0]) == b"x" * 1024


def test_truncated_frame(wire: Wire) -> None:
    body, _ = wire.good()
    response = wire.post(body[:30])  # inside the fixed header
    assert_refused_and_nothing_changed(wire, response, 400, "malformed_request")


def test_a_frame_cut_short_does_not_open(wire: Wire) -> None:
    body, _ = wire.good()
    response = wire.post(body[:-1])  # the tag is cut: it does not authenticate
    assert_refused_and_nothing_changed(wire, response, 400, "bad_envelope")


def test_truncated_contents(wire: Wire) -> None:
    header = {"key": "orders", "items": [{}, {}], "options": {}}
    body, _ = wire.frame(plaintext(header, b"x" * 1024, b"y" * 1024)[:-10])
    assert_refused_and_nothing_changed(wire, wire.post(body), 400, "malformed_request")


def test_extra_trailing_bytes(wire: Wire) -> None:
    header = {"key": "orders", "items": [{}, {}], "options": {}}
    body, _ = wire.frame(plaintext(header, b"x", b"y") + b"\x00")
    assert_refused_and_nothing_changed(wire, wire.post(body), 400, "malformed_request")


def test_a_length_pointing_past_the_end(wire: Wire) -> None:
    header = {"key": "orders", "items": [{}, {}], "options": {}}
    body, _ = wire.frame(plaintext(header, b"x", b"y" * 100, lengths=[1, 4096]))
    assert_refused_and_nothing_changed(wire, wire.post(body), 400, "malformed_request")
    encoded = json.dumps(header).encode()
    body, _ = wire.frame(struct.pack(">I", len(encoded) + 1) + encoded)  # the header's own
    assert_refused_and_nothing_changed(wire, wire.post(body), 400, "malformed_request")


def test_one_thousand_and_one_items(wire: Wire) -> None:
    header = {"key": "orders", "items": [{}] * 1001, "options": {}}
    body, _ = wire.frame(plaintext(header, *[b"x"] * 1001))
    assert_refused_and_nothing_changed(wire, wire.post(body), 400, "bad_batch")


def test_a_tampered_ciphertext_byte(wire: Wire) -> None:
    body, _ = wire.good()
    tampered = bytearray(body)
    tampered[37 + 500] ^= 0x01  # a byte of the ciphertext (after the 37-byte fixed header)
    assert_refused_and_nothing_changed(wire, wire.post(bytes(tampered)), 400, "bad_envelope")


def test_a_replayed_counter(wire: Wire) -> None:
    body, nonce = wire.good()
    first = wire.post(body)
    assert first.status_code == 200
    replayed = wire.post(body)
    assert replayed.status_code == 409 and replayed.headers["Content-Type"] == SEALED
    status, answer = batch_frame.open_response(
        wire.keys, "encrypt", wire.counter, nonce, replayed.content
    )
    assert (status, answer["code"]) == (409, "replayed_request")
    # An older counter, freshly sealed, is refused too; one operation was recorded in all.
    older, _ = wire.good(counter=wire.counter - 1)
    assert wire.post(older).status_code == 409
    assert AuditEvent.objects.filter(action="key.operation").count() == 1


def test_the_counter_is_shared_by_both_framings(wire: Wire) -> None:
    body, _ = wire.good()
    assert wire.post(body).status_code == 200
    envelope, _ = session.seal_request(
        wire.keys,
        "encrypt",
        wire.counter,
        {"key": "orders", "items": [{"plaintext": "eA=="}], "options": {}},
    )
    response = wire.post(json.dumps(envelope).encode(), "application/json")
    assert response.status_code == 409


def test_wrong_content_type(wire: Wire) -> None:
    body, _ = wire.good()
    # The frame sent as JSON is not JSON; as another type, refused unread.
    response = wire.post(body, "application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_request"
    response = wire.post(body, "application/octet-stream")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    # A JSON envelope sent as a frame does not parse as one.
    envelope, _ = session.seal_request(
        wire.keys, "encrypt", wire.counter, {"key": "orders", "items": [{}], "options": {}}
    )
    response = wire.post(json.dumps(envelope).encode())
    assert response.status_code == 400 and response.json()["code"] == "malformed_request"
    # The JSON envelope's own ciphertext re-framed as binary (same session, counter, nonce)
    # does not open: the AAD names the framing.
    reframed = (
        b"\x01"
        + wire.keys.session_id
        + struct.pack(">Q", wire.counter)
        + base64.b64decode(envelope["nonce"])
        + base64.b64decode(envelope["ciphertext"])
    )
    assert_refused_and_nothing_changed(wire, wire.post(reframed), 400, "bad_envelope")


def test_a_binary_frame_recast_as_a_json_envelope_does_not_open(wire: Wire) -> None:
    body, nonce = wire.good()
    envelope = {
        "session": base64.b64encode(wire.keys.session_id).decode(),
        "counter": wire.counter,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(body[37:]).decode(),
    }
    response = wire.post(json.dumps(envelope).encode(), "application/json")
    assert_refused_and_nothing_changed(wire, response, 400, "bad_envelope")


def test_binary_and_json_batches_decrypt_each_others_tokens(kms: LiveKMS, wire: Wire) -> None:
    client = wire.client
    plaintexts = [os.urandom(n) for n in (0, 1, 1024, 4096)]
    items = [{"plaintext": p, "context": {"n": str(i)}} for i, p in enumerate(plaintexts)]
    by_binary = client.operate("encrypt", "orders", items)
    by_json = client.operate("encrypt", "orders", items, framing="json")
    for tokens, framing in ((by_binary, "json"), (by_json, "binary")):
        asked = [
            {"ciphertext": r["ciphertext"], "context": {"n": str(i)}} for i, r in enumerate(tokens)
        ]
        results = client.operate("decrypt", "orders", asked, framing=framing)
        assert [r["plaintext"] for r in results] == plaintexts


def test_both_framings_give_the_same_per_item_errors(wire: Wire) -> None:
    client = wire.client
    good = client.encrypt("orders", b"x", {"a": "1"})
    decrypt_items = [
        {"ciphertext": good, "context": {"a": "1"}},
        {"ciphertext": good, "context": {"a": "2"}},  # decryption_failed
        {"ciphertext": good[:-2] + "==", "context": {"a": "1"}},  # bad_ciphertext
        {"ciphertext": "kms:v2:AAAA"},  # unsupported_format
        {"context": {"a": "1"}},  # no ciphertext at all: bad_ciphertext
        {"ciphertext": good, "context": {"a": 1}},  # bad_context
    ]
    encrypt_items = [
        {"plaintext": b"y" * 65537},  # input_too_large
        {"plaintext": b"y", "context": "nope"},  # bad_context
        {"context": {}},  # no plaintext: bad_input
    ]
    for operation, items in (("decrypt", decrypt_items), ("encrypt", encrypt_items)):
        answers = [
            client.operate(operation, "orders", items, framing=f) for f in ("binary", "json")
        ]
        errors = [[r.get("error") for r in answer] for answer in answers]
        assert errors[0] == errors[1]  # the same codes and details, item by item
        assert None not in errors[0][1:]
    assert answers[0][0]["error"]["code"] == "input_too_large"
