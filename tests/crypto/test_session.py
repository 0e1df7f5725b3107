"""kmsportal.crypto.session without a database: the handshake and the envelope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kmsportal.crypto import session
from kmsportal.crypto.protocol import ProtocolError

CLIENT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SERVER_PEM = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def server_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def handshake(client_key, server_key, group="x25519", tamper=None):
    now = datetime.now(UTC)
    body, state = session.build_session_request(
        client_private_key=client_key, client_certificate_pem=CLIENT_PEM, now=now, group=group
    )
    request, signature = session.SessionRequest.from_json(body)
    request.verify(signature, client_key.public_key())
    answer, server_keys = session.build_session_response(
        request=request,
        request_signature=signature,
        client_name="billing",
        expires_at=now + timedelta(minutes=15),
        server_private_key=server_key,
        server_chain_pems=[SERVER_PEM],
        server_status=b"\x30\x03\x0a\x01\x00",
    )
    if tamper:
        tamper(answer)
    opened = session.open_session_response(
        state=state, response=answer, trusted_server_public_key=server_key.public_key()
    )
    return opened, server_keys


@pytest.mark.parametrize("group", ["x25519", "ffdhe3072"])
def test_both_sides_derive_the_same_session_keys(client_key, server_key, group) -> None:
    opened, server_keys = handshake(client_key, server_key, group)
    assert opened.keys.secret == server_keys.secret and opened.client_name == "billing"
    assert opened.keys.client_to_server != opened.keys.server_to_client
    assert server_keys.secret.hex() not in repr(server_keys)


def test_request_signature_is_checked(client_key, server_key) -> None:
    body, _ = session.build_session_request(
        client_private_key=client_key, client_certificate_pem=CLIENT_PEM, now=datetime.now(UTC)
    )
    request, signature = session.SessionRequest.from_json(body)
    with pytest.raises(ProtocolError) as caught:
        request.verify(signature, server_key.public_key())
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize("member", ["session_id", "expires_at", "client_name", "server_public"])
def test_a_changed_response_member_breaks_the_server_signature(
    client_key, server_key, member
) -> None:
    def tamper(answer):
        if member == "session_id":
            answer[member] = "A" * 22 + "=="
        elif member == "expires_at":
            answer[member] = "2099-01-01T00:00:00Z"
        elif member == "client_name":
            answer[member] = "mallory"
        else:
            other, _ = session.build_session_request(
                client_private_key=client_key,
                client_certificate_pem=CLIENT_PEM,
                now=datetime.now(UTC),
            )
            answer[member] = other["client_public"]

    with pytest.raises(ProtocolError) as caught:
        handshake(client_key, server_key, tamper=tamper)
    assert caught.value.code == "bad_server_signature"


def test_request_and_response_envelopes(client_key, server_key) -> None:
    opened, server_keys = handshake(client_key, server_key)
    envelope, nonce = session.seal_request(opened.keys, "encrypt", 1, {"key": "k", "items": []})
    assert "items" not in str(envelope)
    parsed = session.parse_envelope(envelope)
    assert session.open_request(server_keys, "encrypt", parsed) == {"key": "k", "items": []}
    # The same envelope presented for another operation does not open.
    with pytest.raises(ProtocolError) as caught:
        session.open_request(server_keys, "decrypt", parsed)
    assert caught.value.code == "bad_envelope"
    answer = session.seal_response(server_keys, "encrypt", parsed, 200, {"results": [1]})
    assert session.open_response(opened.keys, "encrypt", 1, nonce, answer) == (
        200,
        {"results": [1]},
    )
    # An answer is bound to its request: another counter or request nonce refuses it.
    for counter, request_nonce in ((2, nonce), (1, bytes(12))):
        with pytest.raises(ProtocolError) as caught:
            session.open_response(opened.keys, "encrypt", counter, request_nonce, answer)
        assert caught.value.code == "bad_envelope"


def test_a_changed_counter_does_not_open(client_key, server_key) -> None:
    opened, server_keys = handshake(client_key, server_key)
    envelope, _ = session.seal_request(opened.keys, "encrypt", 5, {"x": 1})
    envelope["counter"] = 6
    with pytest.raises(ProtocolError) as caught:
        session.open_request(server_keys, "encrypt", session.parse_envelope(envelope))
    assert caught.value.code == "bad_envelope"


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"session": "AAAA", "counter": 1, "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": ""},
        {"session": "A" * 22 + "==", "counter": 0, "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": ""},
        {
            "session": "A" * 22 + "==",
            "counter": True,
            "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "",
        },
        {
            "session": "A" * 22 + "==",
            "counter": 1,
            "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "",
            "x": 1,
        },
    ],
)
def test_malformed_envelopes_are_refused(envelope) -> None:
    with pytest.raises(ProtocolError) as caught:
        session.parse_envelope(envelope)
    assert caught.value.code == "malformed_request"


def test_state_is_single_use(client_key, server_key) -> None:
    now = datetime.now(UTC)
    body, state = session.build_session_request(
        client_private_key=client_key, client_certificate_pem=CLIENT_PEM, now=now
    )
    request, signature = session.SessionRequest.from_json(body)
    answer, _ = session.build_session_response(
        request=request,
        request_signature=signature,
        client_name="billing",
        expires_at=now,
        server_private_key=server_key,
        server_chain_pems=[SERVER_PEM],
        server_status=b"\x30\x00",
    )
    session.open_session_response(
        state=state, response=answer, trusted_server_public_key=server_key.public_key()
    )
    with pytest.raises(ProtocolError) as caught:
        session.open_session_response(
            state=state, response=answer, trusted_server_public_key=server_key.public_key()
        )
    assert caught.value.code == "state_consumed"
