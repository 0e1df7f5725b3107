"""Tests for kmsportal.crypto.protocol: request/response round trips, parsing, tampering.

No database: keys are generated once per session by the fixtures below, certificates are
throw-away self-signed ones (the chain checks belong to the Django side and kmsclient).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsportal.crypto.canonical import canonical_json
from kmsportal.crypto.dh import FFDHE3072, GROUPS, X25519, EphemeralKeyPair, generate_ephemeral
from kmsportal.crypto.protocol import (
    MAX_CLOCK_SKEW,
    NONCE_BYTES,
    PROTOCOL_LABEL,
    PROTOCOL_VERSION,
    ClientExchangeState,
    FetchedKey,
    FetchRequest,
    PrivateKey,
    ProtocolError,
    build_fetch_request,
    build_fetch_response,
    check_timestamp,
    open_fetch_response,
    server_leaf_certificate,
    sign,
    transcript_hash,
    verify_fetch_request,
    verify_signature,
)

NOW = datetime(2026, 11, 28, 14, 42, 19, tzinfo=UTC)
KEY_NAME = "billing-db.master_key"
CLIENT_NAME = "billing-service"
MATERIAL = bytes(range(32))
# RFC 7748 §6.1 Alice, as a fixed client ephemeral key for the independent re-derivation.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
SIGNATURE_CONTEXT = PROTOCOL_LABEL + b"|fetch-response|"

#: Stands in for the stapled OCSP response: the protocol layer carries and signs it only.
STAPLE = bytes.fromhex("3003 0a01 00".replace(" ", ""))


# --- fixtures ----------------------------------------------------------------------------


def _self_signed_pem(key: PrivateKey, common_name: str) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@pytest.fixture(scope="session")
def rsa_client_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def server_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def other_server_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def server_chain(server_key: ec.EllipticCurvePrivateKey) -> list[str]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    return [_self_signed_pem(server_key, "kms-server"), _self_signed_pem(ca_key, "KMS CA")]


@pytest.fixture(scope="session")
def client_pems(
    rsa_client_key: rsa.RSAPrivateKey, ec_client_key: ec.EllipticCurvePrivateKey
) -> dict[str, str]:
    return {
        "rsa": _self_signed_pem(rsa_client_key, CLIENT_NAME),
        "ec": _self_signed_pem(ec_client_key, CLIENT_NAME),
    }


@pytest.fixture(params=["rsa", "ec"])
def client(
    request: pytest.FixtureRequest,
    rsa_client_key: rsa.RSAPrivateKey,
    ec_client_key: ec.EllipticCurvePrivateKey,
    client_pems: dict[str, str],
) -> tuple[PrivateKey, str]:
    """A client key and its certificate PEM, once with RSA and once with EC P-256."""
    key = rsa_client_key if request.param == "rsa" else ec_client_key
    return key, client_pems[request.param]


@pytest.fixture
def rsa_client(
    rsa_client_key: rsa.RSAPrivateKey, client_pems: dict[str, str]
) -> tuple[PrivateKey, str]:
    return rsa_client_key, client_pems["rsa"]


def _wire(obj: dict[str, Any]) -> dict[str, Any]:
    """What the other side sees after JSON over HTTP."""
    return json.loads(json.dumps(obj))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


Exchange = tuple[dict[str, Any], ClientExchangeState, dict[str, Any]]


@pytest.fixture
def exchange(
    rsa_client: tuple[PrivateKey, str],
    server_key: ec.EllipticCurvePrivateKey,
    server_chain: list[str],
) -> Callable[..., Exchange]:
    """Run request -> server checks -> response; returns (request body, state, response)."""

    def run(
        *,
        client: tuple[PrivateKey, str] = rsa_client,
        group: str = X25519,
        version: int | None = None,
        served_version: int = 3,
        signing_key: PrivateKey = server_key,
        client_name: str = CLIENT_NAME,
    ) -> Exchange:
        client_key, client_pem = client
        body, state = build_fetch_request(
            key_name=KEY_NAME,
            version=version,
            group=group,
            client_certificate_pem=client_pem,
            client_private_key=client_key,
            now=NOW,
        )
        request, signature = verify_fetch_request(_wire(body), client_key.public_key(), now=NOW)
        response = build_fetch_response(
            request=request,
            request_signature=signature,
            key_name=KEY_NAME,
            version=served_version,
            client_name=client_name,
            key_material=MATERIAL,
            server_private_key=signing_key,
            server_chain_pems=server_chain,
            server_status=STAPLE,
        )
        return body, state, _wire(response)

    return run


def _resign(
    response: dict[str, Any], state: ClientExchangeState, key: PrivateKey
) -> dict[str, Any]:
    """Re-sign a (modified) response, as only the genuine server could: isolates later checks."""
    members = {k: v for k, v in response.items() if k != "signature"}
    digest = transcript_hash(state.request.signed_bytes(), state.request_signature, members)
    return {**members, "signature": _b64(sign(key, SIGNATURE_CONTEXT + digest))}


def _open(state: ClientExchangeState, response: dict[str, Any], key: PrivateKey) -> FetchedKey:
    return open_fetch_response(
        state=state, response=response, trusted_server_public_key=key.public_key()
    )


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_round_trip(
    group: str,
    client: tuple[PrivateKey, str],
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange(client=client, group=group)
    fetched = _open(state, response, server_key)
    assert fetched == FetchedKey(key_name=KEY_NAME, version=3, material=MATERIAL)


def test_round_trip_with_a_requested_version(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange(version=7, served_version=7)
    assert _open(state, response, server_key).version == 7


def test_round_trip_with_an_rsa_server_key(
    exchange: Callable[..., Exchange], rsa_client_key: rsa.RSAPrivateKey
) -> None:
    _, state, response = exchange(signing_key=rsa_client_key)
    assert _open(state, response, rsa_client_key).material == MATERIAL


def test_request_body_shape(
    client: tuple[PrivateKey, str], exchange: Callable[..., Exchange]
) -> None:
    body, state, _ = exchange(client=client)
    assert body["protocol"] == PROTOCOL_VERSION
    assert body["type"] == "fetch-request"
    assert body["key_name"] == KEY_NAME
    assert body["version"] is None
    assert body["group"] == X25519
    assert body["timestamp"] == "2026-11-28T14:42:19Z"
    assert body["client_certificate_pem"] == client[1]
    assert len(base64.b64decode(body["client_nonce"])) == NONCE_BYTES
    assert len(base64.b64decode(body["client_public"])) == 32
    signed = canonical_json({k: v for k, v in body.items() if k != "signature"})
    assert signed == state.request.signed_bytes()
    assert base64.b64decode(body["signature"]) == state.request_signature


def test_response_body_shape(exchange: Callable[..., Exchange], server_chain: list[str]) -> None:
    _, _, response = exchange()
    assert set(response) == {
        "protocol",
        "type",
        "group",
        "server_public",
        "server_nonce",
        "key_name",
        "version",
        "client_name",
        "server_certificate_chain",
        "server_status",
        "gcm_nonce",
        "ciphertext",
        "signature",
    }
    assert response["type"] == "fetch-response"
    assert base64.b64decode(response["server_status"]) == STAPLE
    assert response["server_certificate_chain"] == server_chain
    assert len(base64.b64decode(response["server_nonce"])) == NONCE_BYTES
    assert len(base64.b64decode(response["gcm_nonce"])) == 12
    assert len(base64.b64decode(response["ciphertext"])) == len(MATERIAL) + 16


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def first_protocol_bytes(obj: Any) -> bytes:
    """The encoding the protocol signed before it shared kmsportal.crypto.canonical."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_member_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=24)
_member_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_member_names, children),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_member_names, _member_values, max_size=12))
def test_canonical_json_signs_the_same_bytes_as_before(members: dict[str, Any]) -> None:
    # Messages have fixed ASCII member names and string, integer, null or list values: for
    # them RFC 8785 and the protocol's first encoding agree byte for byte, so signatures and
    # transcripts made by older clients and servers still verify.
    assert canonical_json(members) == first_protocol_bytes(members)


def test_a_real_request_signs_the_same_bytes_as_before(
    rsa_client: tuple[PrivateKey, str],
) -> None:
    key, pem = rsa_client
    body, _state = build_fetch_request(
        key_name="payments.eu-1",
        version=3,
        group=X25519,
        client_certificate_pem=pem,
        client_private_key=key,
    )
    members = {k: v for k, v in body.items() if k != "signature"}
    assert canonical_json(members) == first_protocol_bytes(members)


@pytest.mark.parametrize("value", [1.5, float("nan"), float("inf")])
def test_canonical_json_refuses_floats(value: float) -> None:
    # The first encoding wrote 1.5 and even NaN (not JSON); no message ever holds a float.
    with pytest.raises(TypeError):
        canonical_json({"version": value})


# --- signatures --------------------------------------------------------------------------


def test_rsa_signature_is_pss_sha256_salt_32(rsa_client_key: rsa.RSAPrivateKey) -> None:
    signature = sign(rsa_client_key, b"data")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    rsa_client_key.public_key().verify(signature, b"data", pss, hashes.SHA256())
    assert verify_signature(rsa_client_key.public_key(), signature, b"data")
    assert not verify_signature(rsa_client_key.public_key(), signature, b"other")


def test_ec_signature_is_ecdsa_sha256(ec_client_key: ec.EllipticCurvePrivateKey) -> None:
    signature = sign(ec_client_key, b"data")
    ec_client_key.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    assert verify_signature(ec_client_key.public_key(), signature, b"data")
    assert not verify_signature(ec_client_key.public_key(), b"\x30\x00", b"data")


def test_unsupported_signing_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="only RSA and EC"):
        sign(ed25519.Ed25519PrivateKey.generate(), b"data")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="2048"):
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        sign(weak, b"data")


# --- request verification ----------------------------------------------------------------


def _signed_body(
    client: tuple[PrivateKey, str], *, now: datetime = NOW, group: str = X25519
) -> dict[str, Any]:
    key, pem = client
    body, _ = build_fetch_request(
        key_name=KEY_NAME,
        version=None,
        group=group,
        client_certificate_pem=pem,
        client_private_key=key,
        now=now,
    )
    return _wire(body)


@pytest.mark.parametrize("minutes", [-4, 4, -5, 5, 0])
def test_timestamp_within_five_minutes_is_accepted(
    minutes: int, rsa_client: tuple[PrivateKey, str]
) -> None:
    body = _signed_body(rsa_client, now=NOW + timedelta(minutes=minutes))
    request, _ = verify_fetch_request(body, rsa_client[0].public_key(), now=NOW)
    assert request.key_name == KEY_NAME


@pytest.mark.parametrize("minutes", [-6, 6, -60 * 24])
def test_stale_timestamp_is_refused(minutes: int, rsa_client: tuple[PrivateKey, str]) -> None:
    body = _signed_body(rsa_client, now=NOW + timedelta(minutes=minutes))
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(body, rsa_client[0].public_key(), now=NOW)
    assert caught.value.code == "stale_timestamp"
    assert "outside ±5 minutes of server time 2026-11-28T14:42:19Z" in caught.value.message


def test_check_timestamp_boundaries() -> None:
    check_timestamp("2026-11-28T14:47:19Z", now=NOW)
    with pytest.raises(ProtocolError, match="stale_timestamp"):
        check_timestamp("2026-11-28T14:47:20Z", now=NOW)
    assert timedelta(minutes=5) == MAX_CLOCK_SKEW
    with pytest.raises(ValueError, match="aware"):
        check_timestamp("2026-11-28T14:42:19Z", now=NOW.replace(tzinfo=None))


def test_request_signed_by_another_key_is_refused(
    rsa_client: tuple[PrivateKey, str], ec_client_key: ec.EllipticCurvePrivateKey
) -> None:
    body = _signed_body(rsa_client)
    forged = {**body, "signature": _b64(sign(ec_client_key, b"anything"))}
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(forged, rsa_client[0].public_key(), now=NOW)
    assert caught.value.code == "bad_signature"
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(body, ec_client_key.public_key(), now=NOW)
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("key_name", "payroll-db.master_key"),
        ("version", 2),
        ("group", FFDHE3072),
        ("client_nonce", _b64(bytes(16))),
        ("client_public", _b64(generate_ephemeral().public_bytes())),
        ("timestamp", "2026-11-28T14:42:20Z"),
    ],
)
def test_request_modified_after_signing_is_refused(
    member: str, value: object, rsa_client: tuple[PrivateKey, str]
) -> None:
    body = _signed_body(rsa_client)
    if member == "group":
        body["client_public"] = _b64(generate_ephemeral(FFDHE3072).public_bytes())
    body[member] = value
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(body, rsa_client[0].public_key(), now=NOW)
    assert caught.value.code == "bad_signature"


def test_unsupported_client_key_type(rsa_client: tuple[PrivateKey, str]) -> None:
    body = _signed_body(rsa_client)
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(body, ed25519.Ed25519PrivateKey.generate().public_key(), now=NOW)  # type: ignore[arg-type]
    assert caught.value.code == "unsupported_key_type"


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], object], str]]:
    def setting(member: str, value: object) -> Callable[[dict[str, Any]], object]:
        return lambda body: {**body, member: value}

    def dropping(member: str) -> Callable[[dict[str, Any]], object]:
        return lambda body: {k: v for k, v in body.items() if k != member}

    x25519_public = _b64(bytes(range(32)))
    return [
        ("not-an-object", lambda body: [body], "malformed_request"),
        ("missing-nonce", dropping("client_nonce"), "malformed_request"),
        ("missing-signature", dropping("signature"), "malformed_request"),
        ("extra-member", setting("admin", True), "malformed_request"),
        ("wrong-type", setting("type", "fetch-response"), "malformed_request"),
        ("protocol-2", setting("protocol", 2), "unsupported_protocol"),
        ("protocol-true", setting("protocol", True), "unsupported_protocol"),
        ("protocol-string", setting("protocol", "1"), "unsupported_protocol"),
        ("group-unknown", setting("group", "p256"), "unsupported_group"),
        ("group-case", setting("group", "X25519"), "unsupported_group"),
        ("group-number", setting("group", 25519), "unsupported_group"),
        ("name-empty", setting("key_name", ""), "bad_key_name"),
        ("name-upper", setting("key_name", "Billing"), "bad_key_name"),
        ("name-long", setting("key_name", "a" * 101), "bad_key_name"),
        ("name-pipe", setting("key_name", "a|b"), "bad_key_name"),
        ("name-slash", setting("key_name", "../etc"), "bad_key_name"),
        ("name-unicode-digit", setting("key_name", "key\u0663"), "bad_key_name"),
        ("name-newline", setting("key_name", "key\n"), "bad_key_name"),
        ("name-number", setting("key_name", 5), "bad_key_name"),
        ("version-zero", setting("version", 0), "bad_version"),
        ("version-negative", setting("version", -1), "bad_version"),
        ("version-string", setting("version", "1"), "bad_version"),
        ("version-bool", setting("version", True), "bad_version"),
        ("version-float", setting("version", 1.0), "bad_version"),
        ("version-huge", setting("version", 2**31), "bad_version"),
        ("public-short", setting("client_public", _b64(bytes(31))), "bad_public_key"),
        ("public-long", setting("client_public", _b64(bytes(33))), "bad_public_key"),
        ("public-ffdhe-size", setting("group", FFDHE3072), "bad_public_key"),
        ("public-not-b64", setting("client_public", "not base64!"), "bad_public_key"),
        ("public-urlsafe", setting("client_public", "-_" + x25519_public[2:]), "bad_public_key"),
        ("public-unpadded", setting("client_public", x25519_public.rstrip("=")), "bad_public_key"),
        ("public-bytes", setting("client_public", [1, 2]), "bad_public_key"),
        ("nonce-short", setting("client_nonce", _b64(bytes(15))), "bad_nonce"),
        ("nonce-long", setting("client_nonce", _b64(bytes(17))), "bad_nonce"),
        ("nonce-not-b64", setting("client_nonce", "%%%%"), "bad_nonce"),
        ("nonce-non-canonical", setting("client_nonce", "AAAAAAAAAAAAAAAAAAAAAB=="), "bad_nonce"),
        ("time-offset", setting("timestamp", "2026-11-28T14:42:19+00:00"), "bad_timestamp"),
        ("time-space", setting("timestamp", "2026-11-28 14:42:19Z"), "bad_timestamp"),
        ("time-fraction", setting("timestamp", "2026-11-28T14:42:19.5Z"), "bad_timestamp"),
        ("time-month-13", setting("timestamp", "2026-13-28T14:42:19Z"), "bad_timestamp"),
        ("time-trailing-newline", setting("timestamp", "2026-11-28T14:42:19Z\n"), "bad_timestamp"),
        ("time-number", setting("timestamp", 1795876939), "bad_timestamp"),
        ("cert-number", setting("client_certificate_pem", 5), "bad_certificate"),
        ("cert-not-pem", setting("client_certificate_pem", "hello"), "bad_certificate"),
        (
            "cert-huge",
            setting("client_certificate_pem", "-----BEGIN CERTIFICATE-----" * 1000),
            "bad_certificate",
        ),
        ("signature-not-b64", setting("signature", "@@"), "bad_signature"),
        ("signature-empty", setting("signature", ""), "bad_signature"),
        ("signature-huge", setting("signature", _b64(bytes(2048))), "bad_signature"),
    ]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [pytest.param(mutate, code, id=name) for name, mutate, code in _mutations()],
)
def test_malformed_request_is_refused_with_its_code(
    mutate: Callable[[dict[str, Any]], object], code: str, rsa_client: tuple[PrivateKey, str]
) -> None:
    body = mutate(_signed_body(rsa_client))
    with pytest.raises(ProtocolError) as caught:
        FetchRequest.from_json(body)
    assert caught.value.code == code
    with pytest.raises(ProtocolError) as caught:
        verify_fetch_request(body, rsa_client[0].public_key(), now=NOW)
    assert caught.value.code == code


def test_build_fetch_request_validates_its_inputs(rsa_client: tuple[PrivateKey, str]) -> None:
    key, pem = rsa_client
    common = {"client_certificate_pem": pem, "client_private_key": key, "now": NOW}
    with pytest.raises(ProtocolError, match="bad_key_name"):
        build_fetch_request(key_name="Bad Name", version=None, **common)
    with pytest.raises(ProtocolError, match="unsupported_group"):
        build_fetch_request(key_name=KEY_NAME, version=None, group="x448", **common)
    with pytest.raises(ProtocolError, match="bad_version"):
        build_fetch_request(key_name=KEY_NAME, version=0, **common)


def test_two_requests_never_share_an_ephemeral_key_or_nonce(
    rsa_client: tuple[PrivateKey, str],
) -> None:
    bodies = [_signed_body(rsa_client) for _ in range(10)]
    assert len({b["client_public"] for b in bodies}) == 10
    assert len({b["client_nonce"] for b in bodies}) == 10


def test_two_responses_never_share_an_ephemeral_key_or_nonce(
    exchange: Callable[..., Exchange],
) -> None:
    responses = [exchange()[2] for _ in range(10)]
    for member in ("server_public", "server_nonce", "gcm_nonce"):
        assert len({r[member] for r in responses}) == 10


# --- response tampering ------------------------------------------------------------------


def _code_of(state: ClientExchangeState, response: object, key: PrivateKey) -> str:
    with pytest.raises(ProtocolError) as caught:
        open_fetch_response(
            state=state, response=response, trusted_server_public_key=key.public_key()
        )
    return caught.value.code


def test_man_in_the_middle_swapping_the_server_key_is_refused(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange()
    mallory = x25519.X25519PrivateKey.generate()
    swapped = {**response, "server_public": _b64(mallory.public_key().public_bytes_raw())}
    assert _code_of(state, swapped, server_key) == "bad_server_signature"


def test_man_in_the_middle_resigning_with_his_own_key_is_refused(
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
    other_server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange()
    mallory = x25519.X25519PrivateKey.generate()
    swapped = {**response, "server_public": _b64(mallory.public_key().public_bytes_raw())}
    assert _code_of(state, _resign(swapped, state, other_server_key), server_key) == (
        "bad_server_signature"
    )


def test_response_signed_by_another_key_is_refused(
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
    other_server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange(signing_key=other_server_key)
    assert _code_of(state, response, server_key) == "bad_server_signature"


def test_response_to_another_request_is_refused(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, _ = exchange()
    _, _, other_response = exchange()
    assert _code_of(state, other_response, server_key) == "bad_server_signature"


def _flip_last_byte(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[-1] ^= 1
    return _b64(bytes(raw))


@pytest.mark.parametrize(
    ("member", "change"),
    [
        ("ciphertext", _flip_last_byte),
        ("gcm_nonce", _flip_last_byte),
        ("server_nonce", _flip_last_byte),
        ("key_name", lambda _: "payroll-db.master_key"),
        ("version", lambda v: v + 1),
        ("client_name", lambda _: "payroll-service"),
        ("server_certificate_chain", lambda chain: chain[:1]),
        ("signature", _flip_last_byte),
    ],
)
def test_modified_response_is_refused(
    member: str,
    change: Callable[[Any], Any],
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange()
    modified = {**response, member: change(response[member])}
    assert _code_of(state, modified, server_key) == "bad_server_signature"


@pytest.mark.parametrize(
    ("member", "change", "code"),
    [
        # Past the signature, the AEAD and the key schedule still bind every member.
        ("ciphertext", _flip_last_byte, "decryption_failed"),
        ("gcm_nonce", _flip_last_byte, "decryption_failed"),
        ("server_nonce", _flip_last_byte, "decryption_failed"),
        ("client_name", lambda _: "payroll-service", "decryption_failed"),
        ("version", lambda v: v + 1, "decryption_failed"),
        ("server_certificate_chain", lambda chain: chain[:1], "decryption_failed"),
        ("server_public", lambda _: _b64(generate_ephemeral().public_bytes()), "decryption_failed"),
        ("server_public", lambda _: _b64(bytes(32)), "bad_public_key"),
        ("key_name", lambda _: "payroll-db.master_key", "response_mismatch"),
        ("group", lambda _: FFDHE3072, "malformed_response"),
    ],
)
def test_validly_signed_but_inconsistent_response_is_refused(
    member: str,
    change: Callable[[Any], Any],
    code: str,
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange()
    modified = _resign({**response, member: change(response[member])}, state, server_key)
    assert _code_of(state, modified, server_key) == code


def test_response_for_another_version_than_asked_is_refused(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange(version=3, served_version=3)
    modified = _resign({**response, "version": 4}, state, server_key)
    assert _code_of(state, modified, server_key) == "response_mismatch"


def test_response_in_another_group_is_refused(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange()
    ffdhe_public = _b64(generate_ephemeral(FFDHE3072).public_bytes())
    modified = _resign(
        {**response, "group": FFDHE3072, "server_public": ffdhe_public}, state, server_key
    )
    assert _code_of(state, modified, server_key) == "response_mismatch"


def test_exchange_state_is_single_use(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange()
    assert "pending" in repr(state)
    _open(state, response, server_key)
    assert "used" in repr(state)
    assert _code_of(state, response, server_key) == "state_consumed"


def test_failed_open_also_consumes_the_state(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, state, response = exchange()
    assert _code_of(state, {"protocol": 1}, server_key) == "malformed_response"
    assert _code_of(state, response, server_key) == "state_consumed"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda r: None, "malformed_response"),
        (lambda r: {**r, "protocol": 2}, "unsupported_protocol"),
        (lambda r: {**r, "type": "fetch-request"}, "malformed_response"),
        (lambda r: {**r, "extra": 1}, "malformed_response"),
        (lambda r: {k: v for k, v in r.items() if k != "ciphertext"}, "malformed_response"),
        (lambda r: {**r, "group": "p256"}, "malformed_response"),
        (lambda r: {**r, "server_public": _b64(bytes(31))}, "malformed_response"),
        (lambda r: {**r, "server_nonce": _b64(bytes(8))}, "malformed_response"),
        (lambda r: {**r, "gcm_nonce": _b64(bytes(16))}, "malformed_response"),
        (lambda r: {**r, "ciphertext": _b64(bytes(16))}, "malformed_response"),
        (lambda r: {**r, "version": None}, "malformed_response"),
        (lambda r: {**r, "version": "3"}, "malformed_response"),
        (lambda r: {**r, "key_name": "A"}, "malformed_response"),
        (lambda r: {**r, "client_name": ""}, "malformed_response"),
        (lambda r: {**r, "client_name": "\ud800"}, "malformed_response"),
        (lambda r: {**r, "server_certificate_chain": []}, "malformed_response"),
        (lambda r: {**r, "server_certificate_chain": "PEM"}, "malformed_response"),
        (lambda r: {**r, "signature": "!"}, "malformed_response"),
    ],
)
def test_malformed_response_is_refused_with_its_code(
    mutate: Callable[[dict[str, Any]], object],
    code: str,
    exchange: Callable[..., Exchange],
    server_key: ec.EllipticCurvePrivateKey,
) -> None:
    _, state, response = exchange()
    assert _code_of(state, mutate(response), server_key) == code


# --- server side -------------------------------------------------------------------------


def test_server_refuses_a_low_order_client_key(
    rsa_client: tuple[PrivateKey, str],
    server_key: ec.EllipticCurvePrivateKey,
    server_chain: list[str],
) -> None:
    body = _signed_body(rsa_client)
    request, signature = FetchRequest.from_json({**body, "client_public": _b64(bytes(32))})
    with pytest.raises(ProtocolError) as caught:
        build_fetch_response(
            request=request,
            request_signature=signature,
            key_name=KEY_NAME,
            version=1,
            client_name=CLIENT_NAME,
            key_material=MATERIAL,
            server_private_key=server_key,
            server_chain_pems=server_chain,
            server_status=STAPLE,
        )
    assert caught.value.code == "bad_public_key"
    assert "all-zero" in caught.value.message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key_name": "other"}, "key_name"),
        ({"version": 4}, "version"),
        ({"version": 0}, "version"),
        ({"client_name": ""}, "client_name"),
        ({"key_material": b""}, "key_material"),
        ({"server_chain_pems": []}, "server_certificate_chain"),
    ],
)
def test_server_refuses_inconsistent_arguments(
    overrides: dict[str, Any],
    message: str,
    rsa_client: tuple[PrivateKey, str],
    server_key: ec.EllipticCurvePrivateKey,
    server_chain: list[str],
) -> None:
    key, pem = rsa_client
    body, _ = build_fetch_request(
        key_name=KEY_NAME,
        version=3,
        client_certificate_pem=pem,
        client_private_key=key,
        now=NOW,
    )
    request, signature = FetchRequest.from_json(body)
    arguments: dict[str, Any] = {
        "request": request,
        "request_signature": signature,
        "key_name": KEY_NAME,
        "version": 3,
        "client_name": CLIENT_NAME,
        "key_material": MATERIAL,
        "server_private_key": server_key,
        "server_chain_pems": server_chain,
        "server_status": STAPLE,
    }
    with pytest.raises(ValueError, match=message):
        build_fetch_response(**{**arguments, **overrides})


def test_server_leaf_certificate(
    exchange: Callable[..., Exchange], server_key: ec.EllipticCurvePrivateKey
) -> None:
    _, _, response = exchange()
    leaf = server_leaf_certificate(response)
    assert leaf.public_key() == server_key.public_key()
    garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(ProtocolError, match="bad_certificate"):
        server_leaf_certificate({**response, "server_certificate_chain": [garbage]})
    two = response["server_certificate_chain"][0] + response["server_certificate_chain"][1]
    with pytest.raises(ProtocolError, match="bad_certificate"):
        server_leaf_certificate({**response, "server_certificate_chain": [two]})
    with pytest.raises(ProtocolError, match="malformed_response"):
        server_leaf_certificate({})


def test_fetched_key_repr_hides_the_material() -> None:
    assert MATERIAL.hex() not in repr(FetchedKey(key_name="k", version=1, material=MATERIAL))
    assert repr(MATERIAL) not in repr(FetchedKey(key_name="k", version=1, material=MATERIAL))


# --- the documented construction, re-implemented independently ----------------------------


def _framed_sha256(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()


def test_transcript_hash_is_length_prefixed() -> None:
    fields = {"a": 1}
    body = canonical_json(fields)
    assert transcript_hash(b"req", b"sig", fields) == _framed_sha256(b"req", b"sig", body)
    # Moving a byte across a boundary changes the hash (plain concatenation would not).
    assert transcript_hash(b"reqs", b"ig", fields) != transcript_hash(b"req", b"sig", fields)
    with pytest.raises(ValueError, match="signature"):
        transcript_hash(b"req", b"sig", {"signature": "x"})


def test_construction_matches_the_module_documentation(
    rsa_client: tuple[PrivateKey, str],
    server_key: ec.EllipticCurvePrivateKey,
    server_chain: list[str],
) -> None:
    """Decrypt a response with only the docstring's recipe and `cryptography` primitives."""
    client_key, pem = rsa_client
    alice = EphemeralKeyPair.from_private_bytes(X25519, ALICE_PRIVATE)
    client_nonce = bytes(range(16))
    request = FetchRequest(
        key_name=KEY_NAME,
        version=None,
        group=X25519,
        client_public=alice.public_bytes(),
        client_nonce=client_nonce,
        timestamp="2026-11-28T14:42:19Z",
        client_certificate_pem=pem,
    )
    request_signature = sign(client_key, request.signed_bytes())
    response = _wire(
        build_fetch_response(
            request=request,
            request_signature=request_signature,
            key_name=KEY_NAME,
            version=3,
            client_name=CLIENT_NAME,
            key_material=MATERIAL,
            server_private_key=server_key,
            server_chain_pems=server_chain,
            server_status=STAPLE,
        )
    )

    def cj(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    # RS: every request member except the signature.
    rs = cj({k: v for k, v in request.to_json(request_signature).items() if k != "signature"})
    signed_members = {k: v for k, v in response.items() if k != "signature"}
    th = _framed_sha256(rs, request_signature, cj(signed_members))
    server_key.public_key().verify(
        base64.b64decode(response["signature"]),
        PROTOCOL_LABEL + b"|fetch-response|" + th,
        ec.ECDSA(hashes.SHA256()),
    )
    pre_members = {k: v for k, v in signed_members.items() if k not in {"gcm_nonce", "ciphertext"}}
    h_pre = _framed_sha256(rs, request_signature, cj(pre_members))
    z = x25519.X25519PrivateKey.from_private_bytes(ALICE_PRIVATE).exchange(
        x25519.X25519PublicKey.from_public_bytes(base64.b64decode(response["server_public"]))
    )
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=client_nonce + base64.b64decode(response["server_nonce"]),
        info=b"kmsportal key distribution v1|" + h_pre,
    ).derive(z)
    material = AESGCM(key).decrypt(
        base64.b64decode(response["gcm_nonce"]),
        base64.b64decode(response["ciphertext"]),
        f"{KEY_NAME}|3|{CLIENT_NAME}".encode(),
    )
    assert material == MATERIAL
