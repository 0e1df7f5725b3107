"""kmsportal.crypto.batch_frame without a database: the documented bytes, round trips, the
binding to the session, operation, counter and framing, and strict parsing."""

from __future__ import annotations

import base64
import json
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto import batch_frame as frame
from kmsportal.crypto import session
from kmsportal.crypto.protocol import ProtocolError

LABEL = b"kmsportal operations session v1"


@pytest.fixture
def keys() -> session.SessionKeys:
    return session.SessionKeys.from_secret(os.urandom(16), os.urandom(64))


def F(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def request_aad(keys: session.SessionKeys, operation: str, counter: int) -> bytes:
    """The request AAD written from the documentation, not from the module."""
    return (
        LABEL
        + b"|binary-request|\x01"
        + F(keys.session_id)
        + F(operation.encode())
        + struct.pack(">Q", counter)
    )


def plaintext(header: object, *fields: bytes | None, header_bytes: bytes | None = None) -> bytes:
    """A sealed plaintext written from the documentation: uint32 header length, header,
    uint32 field count, one uint32 length per field (0xFFFFFFFF: absent), the fields."""
    encoded = json.dumps(header).encode() if header_bytes is None else header_bytes
    lengths = [0xFFFFFFFF if field is None else len(field) for field in fields]
    return table(encoded, len(fields), lengths, b"".join(field or b"" for field in fields))


def table(encoded_header: bytes, count: int, lengths: list[int], data: bytes) -> bytes:
    """A plaintext with any field count, lengths and data (consistent or not)."""
    out = struct.pack(">I", len(encoded_header)) + encoded_header + struct.pack(">I", count)
    return out + b"".join(struct.pack(">I", n) for n in lengths) + data


def by_hand(
    keys: session.SessionKeys, operation: str, counter: int, plain: bytes
) -> session.Envelope:
    """A request frame built by hand (the documented layout), parsed by the server."""
    nonce = os.urandom(12)
    sealed = AESGCM(keys.client_to_server).encrypt(
        nonce, plain, request_aad(keys, operation, counter)
    )
    body = b"\x01" + keys.session_id + struct.pack(">Q", counter) + nonce + sealed
    return frame.parse_request(body)


def test_a_frame_built_from_the_documentation_opens(keys) -> None:
    plain = plaintext(
        {"key": "orders", "items": [{"context": {"t": "a"}}, {}], "options": {}},
        b"first",
        b"",
    )
    body = frame.open_request(keys, "encrypt", by_hand(keys, "encrypt", 7, plain))
    assert body == {
        "key": "orders",
        "items": [{"context": {"t": "a"}, "plaintext": b"first"}, {"plaintext": b""}],
        "options": {},
    }


def test_request_and_answer_round_trip(keys) -> None:
    items = [
        {"message": b"\x00\xff" * 600, "signature": "kms:v1:AAAA"},
        {"message": b"m"},  # no signature: absent, as a JSON item without the member
    ]
    http_body, nonce = frame.seal_request(keys, "verify", 3, {"key": "k", "items": items})
    assert items[1] == {"message": b"m"}  # the caller's items are not changed
    assert http_body[0] == 1 and http_body[1:17] == keys.session_id
    assert b"\x00\xff" * 600 not in http_body  # sealed
    envelope = frame.parse_request(http_body)
    assert (envelope.counter, envelope.nonce) == (3, nonce)
    assert frame.open_request(keys, "verify", envelope) == {"key": "k", "items": items}

    results = [
        {"ciphertext": "kms:v1:QUJD", "version": 2},
        {"error": {"code": "bad_input", "detail": "no"}},
    ]
    answer = frame.seal_response(keys, "encrypt", envelope, 200, {"key": "k", "results": results})
    assert b"kms:v1:QUJD" not in answer
    status, body = frame.open_response(keys, "encrypt", 3, nonce, answer)
    assert status == 200
    assert body["results"] == [
        {"ciphertext": "kms:v1:QUJD", "version": 2},
        {"error": {"code": "bad_input", "detail": "no"}},
    ]
    # A refusal: a problem document, no field.
    refused = frame.seal_response(keys, "encrypt", envelope, 403, {"code": "not_granted"})
    assert frame.open_response(keys, "encrypt", 3, nonce, refused) == (403, {"code": "not_granted"})


def test_the_answer_is_bound_to_its_request(keys) -> None:
    http_body, nonce = frame.seal_request(keys, "ping", 4, {})
    envelope = frame.parse_request(http_body)
    assert frame.open_request(keys, "ping", envelope) == {}
    answer = frame.seal_response(keys, "ping", envelope, 200, {"client": "billing"})
    for operation, counter, request_nonce in (
        ("ping", 5, nonce),
        ("ping", 4, bytes(12)),
        ("encrypt", 4, nonce),
    ):
        with pytest.raises(ProtocolError) as caught:
            frame.open_response(keys, operation, counter, request_nonce, answer)
        assert caught.value.code == "bad_envelope"
    tampered = bytearray(answer)
    tampered[20] ^= 1
    with pytest.raises(ProtocolError) as caught:
        frame.open_response(keys, "ping", 4, nonce, bytes(tampered))
    assert caught.value.code == "bad_envelope"


@pytest.mark.parametrize("change", ["operation", "counter", "ciphertext", "session key"])
def test_a_changed_request_does_not_open(keys, change) -> None:
    http_body, _ = frame.seal_request(keys, "encrypt", 9, {"key": "k", "items": [{}]})
    operation = "decrypt" if change == "operation" else "encrypt"
    body = bytearray(http_body)
    if change == "counter":
        body[17:25] = struct.pack(">Q", 10)
    if change == "ciphertext":
        body[-1] ^= 0x80
    other = session.SessionKeys.from_secret(keys.session_id, os.urandom(64))
    opener = other if change == "session key" else keys
    with pytest.raises(ProtocolError) as caught:
        frame.open_request(opener, operation, frame.parse_request(bytes(body)))
    assert caught.value.code == "bad_envelope"


def test_a_json_envelope_does_not_open_as_a_binary_frame_nor_the_reverse(keys) -> None:
    """The two framings' AADs differ: the same session, counter, nonce and ciphertext moved
    from one framing to the other do not open."""
    body = {"key": "k", "items": [{"plaintext": base64.b64encode(b"x").decode()}]}
    envelope, _ = session.seal_request(keys, "encrypt", 1, body)
    parsed = session.parse_envelope(envelope)
    reframed = b"\x01" + parsed.session_id + struct.pack(">Q", 1) + parsed.nonce + parsed.ciphertext
    with pytest.raises(ProtocolError) as caught:
        frame.open_request(keys, "encrypt", frame.parse_request(reframed))
    assert caught.value.code == "bad_envelope"

    http_body, _ = frame.seal_request(keys, "encrypt", 2, {"key": "k", "items": [{}]})
    binary = frame.parse_request(http_body)
    with pytest.raises(ProtocolError) as caught:
        session.open_request(keys, "encrypt", binary)
    assert caught.value.code == "bad_envelope"


@pytest.mark.parametrize(
    "http_body",
    [
        b"",
        b"\x01" + bytes(36),  # the fixed header alone, no ciphertext
        b"\x01" + bytes(36 + 15),  # shorter than a GCM tag
        b"\x02" + bytes(60),  # unknown frame version
        b'{"session": "", "counter": 1}' + bytes(40),  # a JSON body
        b"\x01" + bytes(16) + bytes(8) + bytes(12) + bytes(16),  # counter 0
    ],
)
def test_malformed_frames_are_refused_before_opening(http_body) -> None:
    with pytest.raises(ProtocolError) as caught:
        frame.parse_request(http_body)
    assert caught.value.code == "malformed_request"


ITEMS = {"key": "k", "items": [{}, {}], "options": {}}


@pytest.mark.parametrize(
    ("plain", "code"),
    [
        (b"", "malformed_request"),  # no header length
        (b"\x00\x00", "malformed_request"),
        (plaintext(ITEMS, b"a", b"b")[:-1], "malformed_request"),  # truncated field
        (plaintext(ITEMS, b"a"), "malformed_request"),  # a field missing
        (plaintext(ITEMS, b"a", b"b") + b"\x00", "malformed_request"),  # trailing byte
        (plaintext(ITEMS, b"a", b"b", b"c"), "malformed_request"),  # one field too many
        (table(json.dumps(ITEMS).encode(), 2, [1, 2**20], b"ab"), "malformed_request"),
        (table(json.dumps(ITEMS).encode(), 2, [1, 0xFFFFFFFE], b"a"), "malformed_request"),
        (table(json.dumps(ITEMS).encode(), 2, [1], b""), "malformed_request"),  # table cut
        (table(json.dumps(ITEMS).encode(), 2, [1, 1], b"abc"), "malformed_request"),
        (table(json.dumps(ITEMS).encode(), 2**31, [], b""), "malformed_request"),
        (struct.pack(">I", 2) + b"{}", "malformed_request"),  # no field count
        (struct.pack(">I", 1000) + b"{}", "malformed_request"),  # header past the end
        (plaintext(None, header_bytes=b"\xff\xfe"), "malformed_request"),  # not UTF-8
        (plaintext(None, header_bytes=b"[1]"), "malformed_request"),  # not an object
        (plaintext({"key": "k"}), "malformed_request"),  # no items
        (plaintext({**ITEMS, "extra": 1}, b"a", b"b"), "malformed_request"),
        (plaintext({"key": "k", "items": [1]}, b"a"), "malformed_request"),
        (plaintext({"key": "k", "items": [{"plaintext": "eA=="}]}, None), "malformed_request"),
        (plaintext({"key": "k", "items": []}), "bad_batch"),
        (plaintext({"key": "k", "items": {}}), "bad_batch"),
        (plaintext({"key": "k", "items": [{}] * 1001}, *[b"x"] * 1001), "bad_batch"),
    ],
)
def test_malformed_contents_are_refused_whole(keys, plain, code) -> None:
    with pytest.raises(ProtocolError) as caught:
        frame.open_request(keys, "encrypt", by_hand(keys, "encrypt", 1, plain))
    assert caught.value.code == code


def test_a_thousand_items_and_absent_fields_are_accepted(keys) -> None:
    plain = plaintext({"key": "k", "items": [{}] * 1000}, *[b"x", None] * 500)
    body = frame.open_request(keys, "encrypt", by_hand(keys, "encrypt", 1, plain))
    assert body["items"][:3] == [{"plaintext": b"x"}, {}, {"plaintext": b"x"}]


def test_a_token_that_is_not_ascii_stays_bytes_and_is_refused_per_item(keys) -> None:
    plain = plaintext({"key": "k", "items": [{}, {}]}, b"kms:v1:AAAA", "kms:v1:é".encode())
    body = frame.open_request(keys, "decrypt", by_hand(keys, "decrypt", 1, plain))
    assert body["items"] == [{"ciphertext": "kms:v1:AAAA"}, {"ciphertext": "kms:v1:é".encode()}]


def test_a_ping_carries_nothing(keys) -> None:
    with pytest.raises(ProtocolError) as caught:
        frame.open_request(keys, "ping", by_hand(keys, "ping", 1, plaintext({"x": 1})))
    assert caught.value.code == "malformed_request"
    with pytest.raises(ProtocolError) as caught:
        frame.open_request(keys, "ping", by_hand(keys, "ping", 1, plaintext({}, b"x")))
    assert caught.value.code == "malformed_request"
