"""The enrollment exchange of kmsportal.crypto.protocol (issue 13), without a server: the token
never travels, the MAC binds the CSR, the answer is authenticated twice, tampering fails."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kmsportal.crypto import protocol

TOKEN = "00112233445566778899aabbccddeeff" * 2
ANSWER = {
    "client": "billing",
    "certificate": "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n",
    "chain": ["-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"],
    "root_ca_certificate": "-----BEGIN CERTIFICATE-----\nR\n-----END CERTIFICATE-----\n",
    "not_after": "2027-01-01T00:00:00+00:00",
    "server_identity": {"ca_spki_sha256": "ab" * 32, "deployment": "urn:kmsportal:deployment:x"},
}
CHAIN = ["-----BEGIN CERTIFICATE-----\nS\n-----END CERTIFICATE-----\n"]


@pytest.fixture(scope="module")
def server_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_the_token_never_travels_and_its_derivations_are_independent() -> None:
    body, _state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    wire = json.dumps(body)
    token_id, mac_key = protocol.enrollment_token_keys(TOKEN)
    assert TOKEN not in wire and mac_key.hex() not in wire
    assert body["token_id"] == token_id and token_id not in TOKEN
    assert protocol.enrollment_token_keys(TOKEN.upper()) == (token_id, mac_key)
    assert len(protocol.new_enrollment_token()) == 64
    assert protocol.new_enrollment_token() != protocol.new_enrollment_token()
    for bad in ("", "abc", TOKEN[:-1], TOKEN + "0", "g" * 64, "-" + TOKEN[1:]):
        with pytest.raises(protocol.ProtocolError, match="64 hex digits"):
            protocol.enrollment_token_keys(bad)


def test_the_mac_binds_every_member() -> None:
    body, _state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    _token_id, mac_key = protocol.enrollment_token_keys(TOKEN)
    protocol.verify_enroll_request(protocol.parse_enroll_request(body), mac_key)
    for member, value in (("csr", "ANOTHER CSR"), ("client_nonce", "AAAAAAAAAAAAAAAAAAAAAA==")):
        forged = protocol.parse_enroll_request({**body, member: value})
        with pytest.raises(protocol.ProtocolError) as caught:
            protocol.verify_enroll_request(forged, mac_key)
        assert caught.value.code == "bad_token_proof"
    _other_id, other_key = protocol.enrollment_token_keys("f" * 64)
    with pytest.raises(protocol.ProtocolError):
        protocol.verify_enroll_request(protocol.parse_enroll_request(body), other_key)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: {"token": TOKEN, "csr": "x"}, "legacy_enrollment"),
        (lambda b: {**b, "token": TOKEN}, "legacy_enrollment"),
        (lambda b: {**b, "extra": 1}, "malformed_request"),
        (lambda b: {k: v for k, v in b.items() if k != "mac"}, "malformed_request"),
        (lambda b: {**b, "type": "fetch-request"}, "malformed_request"),
        (lambda b: {**b, "token_id": "ZZ" * 16}, "malformed_request"),
        (lambda b: {**b, "csr": "x" * 20000}, "malformed_request"),
        (lambda b: {**b, "mac": "AAAA"}, "malformed_request"),
        (lambda b: {**b, "protocol": 2}, "unsupported_protocol"),
        (lambda b: [], "malformed_request"),
    ],
)
def test_malformed_requests(change, code: str) -> None:
    body, _state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse_enroll_request(change(body))
    assert caught.value.code == code


def _answer(server_key, body):
    _token_id, mac_key = protocol.enrollment_token_keys(TOKEN)
    return protocol.build_enroll_response(
        request=protocol.parse_enroll_request(body),
        mac_key=mac_key,
        answer=ANSWER,
        server_private_key=server_key,
        server_chain_pems=CHAIN,
    )


def test_the_answer_is_authenticated_by_the_token_and_signed(server_key) -> None:
    body, state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    response = _answer(server_key, body)
    opened = protocol.open_enroll_response(state=state, response=response)
    assert opened.members["server_identity"] == ANSWER["server_identity"]
    assert opened.signature_verifies(server_key.public_key())
    assert not opened.signature_verifies(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.mark.parametrize(
    "member",
    ["client", "certificate", "chain", "server_identity", "server_certificate_chain", "mac"],
)
def test_any_change_to_the_answer_fails_its_mac(server_key, member: str) -> None:
    body, state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    response = _answer(server_key, body)
    changed = {
        "client": "mallory",
        "certificate": CHAIN[0],
        "chain": CHAIN,
        "server_identity": {
            **ANSWER["server_identity"],
            "deployment": "urn:kmsportal:deployment:y",
        },
        "server_certificate_chain": ANSWER["chain"] + CHAIN,
        "mac": "A" * 43 + "=",
    }[member]
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.open_enroll_response(state=state, response={**response, member: changed})
    assert caught.value.code == "bad_server_mac"


def test_an_answer_to_another_request_fails_its_mac(server_key) -> None:
    body, _state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    _body2, other_state = protocol.build_enroll_request(token=TOKEN, csr_pem="CSR")
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.open_enroll_response(state=other_state, response=_answer(server_key, body))
    assert caught.value.code == "bad_server_mac"
