"""kmsportal.crypto.operations without a database: known answers, round trips, tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto import operations as ops

KEY_ID = uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")


@pytest.fixture(scope="session")
def materials() -> dict[str, bytes]:
    """One material per key type, generated once (RSA-4096 takes a second or more)."""
    return {key_type: ops.generate_material(key_type) for key_type in ops.KEY_TYPES}


def loaded(materials: dict[str, bytes], key_type: str, version: int = 1) -> ops.LoadedKey:
    return ops.load_key(key_type, materials[key_type], key_id=KEY_ID, version=version)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_aes_token_layout_is_the_documented_one() -> None:
    """Known answer: a token assembled by hand from the documented layout decrypts."""
    material = bytes(range(32))
    nonce = bytes(12)
    header = struct.pack(">BB16sI", 1, 1, KEY_ID.bytes, 7)
    aad = header + b'{"tenant":"acme"}'
    body = nonce + AESGCM(material).encrypt(nonce, b"attack at dawn", aad)
    token = "kms:v1:" + _b64url(header + body)
    key = ops.load_key("aes-256-gcm", material, key_id=KEY_ID, version=7)
    assert ops.decrypt(key, ops.parse_token(token), {"tenant": "acme"}) == b"attack at dawn"


def test_ed25519_signature_matches_rfc8032_test_1() -> None:
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    der = ed25519.Ed25519PrivateKey.from_private_bytes(secret).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = ops.load_key("ed25519", der, key_id=KEY_ID, version=1)
    token = ops.parse_token(ops.sign(key, b""))
    assert token.body.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_hmac_is_plain_hmac_sha256() -> None:
    material = bytes(range(32))
    key = ops.load_key("hmac-sha256", material, key_id=KEY_ID, version=2)
    token = ops.parse_token(ops.mac(key, b"message"))
    assert token.body == hmac.new(material, b"message", hashlib.sha256).digest()
    assert ops.mac_verify(key, b"message", token)
    assert not ops.mac_verify(key, b"messagE", token)


@pytest.mark.parametrize("key_type", ["aes-256-gcm", "rsa-3072", "rsa-4096"])
def test_encrypt_round_trip_with_context(materials, key_type) -> None:
    key = loaded(materials, key_type)
    token = ops.encrypt(key, b"secret payload", {"b": "2", "a": "1"})
    assert token.startswith("kms:v1:") and "secret" not in token
    parsed = ops.parse_token(token)
    assert (parsed.key_id, parsed.version) == (KEY_ID, 1)
    # The context is canonical: the order of its entries does not matter.
    assert ops.decrypt(key, parsed, {"a": "1", "b": "2"}) == b"secret payload"


@pytest.mark.parametrize("key_type", ["aes-256-gcm", "rsa-3072"])
@pytest.mark.parametrize("context", [{}, {"a": "2"}, {"a": "1", "c": "3"}, None])
def test_context_mismatch_is_refused(materials, key_type, context) -> None:
    key = loaded(materials, key_type)
    token = ops.parse_token(ops.encrypt(key, b"x", {"a": "1"}))
    with pytest.raises(ops.OperationError) as caught:
        ops.decrypt(key, token, context)
    assert caught.value.code == "decryption_failed"


@pytest.mark.parametrize("key_type", ["aes-256-gcm", "rsa-3072"])
def test_tampered_ciphertext_is_refused(materials, key_type) -> None:
    key = loaded(materials, key_type)
    token = ops.parse_token(ops.encrypt(key, b"payload"))
    for position in (0, len(token.body) // 2, len(token.body) - 1):
        body = bytearray(token.body)
        body[position] ^= 1
        tampered = ops.Token(token.kind, token.key_id, token.version, bytes(body), token.header)
        with pytest.raises(ops.OperationError) as caught:
            ops.decrypt(key, tampered)
        assert caught.value.code == "decryption_failed"


def test_header_cannot_be_pointed_at_another_version(materials) -> None:
    """The header is in the AAD: rewriting the version number breaks the ciphertext."""
    v1 = loaded(materials, "aes-256-gcm", 1)
    v2 = ops.load_key("aes-256-gcm", materials["aes-256-gcm"], key_id=KEY_ID, version=2)
    token = ops.parse_token(ops.encrypt(v1, b"payload"))
    header = struct.pack(">BB16sI", 1, 1, KEY_ID.bytes, 2)
    forged = ops.parse_token("kms:v1:" + _b64url(header + token.body))
    with pytest.raises(ops.OperationError) as caught:
        ops.decrypt(v2, forged)
    assert caught.value.code == "decryption_failed"
    with pytest.raises(ops.OperationError) as caught:
        ops.decrypt(v2, token)
    assert caught.value.code == "wrong_key"


@pytest.mark.parametrize(
    "text, code",
    [
        ("", "bad_ciphertext"),
        ("vault:v1:abc", "bad_ciphertext"),
        ("kms:v2:AAAA", "unsupported_format"),
        ("kms:v1:AAAA", "bad_ciphertext"),
        ("kms:v1:" + "A" * 40 + "=", "bad_ciphertext"),
        (
            "kms:v1:" + _b64url(struct.pack(">BB16sI", 9, 1, bytes(16), 1) + b"x"),
            "unsupported_format",
        ),
        ("kms:v1:" + _b64url(struct.pack(">BB16sI", 1, 9, bytes(16), 1) + b"x"), "bad_ciphertext"),
        ("kms:v1:" + _b64url(struct.pack(">BB16sI", 1, 1, bytes(16), 0) + b"x"), "bad_ciphertext"),
        (12, "bad_ciphertext"),
    ],
)
def test_malformed_tokens_are_refused(text, code) -> None:
    with pytest.raises(ops.OperationError) as caught:
        ops.parse_token(text)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "key_type", ["rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"]
)
def test_sign_verify_round_trip_and_tamper(materials, key_type) -> None:
    key = loaded(materials, key_type)
    token = ops.parse_token(ops.sign(key, b"release 1.2.3"))
    assert ops.verify(key, b"release 1.2.3", token)
    assert not ops.verify(key, b"release 1.2.4", token)
    body = bytearray(token.body)
    body[-1] ^= 1
    assert not ops.verify(
        key, b"release 1.2.3", ops.Token(token.kind, token.key_id, 1, bytes(body), token.header)
    )


@pytest.mark.parametrize("key_type", ["rsa-3072", "ecdsa-p256", "ed25519"])
def test_signature_verifies_with_the_published_public_key(materials, key_type) -> None:
    """What `public-key` hands out verifies a signature with plain cryptography calls."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    key = loaded(materials, key_type)
    public = serialization.load_pem_public_key(ops.public_key_pem(key).encode())
    signature = ops.parse_token(ops.sign(key, b"hello")).body
    if key_type == "rsa-3072":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, b"hello", pss, hashes.SHA256())
    elif key_type == "ecdsa-p256":
        public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, b"hello")


def test_fingerprints(materials) -> None:
    aes = ops.fingerprint("aes-256-gcm", materials["aes-256-gcm"])
    assert len(aes) == 6
    for key_type in ops.ASYMMETRIC_TYPES:
        spki = (
            serialization.load_der_private_key(materials[key_type], None)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        assert ops.fingerprint(key_type, materials[key_type]) == hashlib.sha256(spki).hexdigest()


def test_material_must_match_its_type(materials) -> None:
    with pytest.raises(ops.OperationError) as caught:
        ops.load_key("rsa-4096", materials["rsa-3072"], key_id=KEY_ID, version=1)
    assert caught.value.code == "bad_key_material"
    with pytest.raises(ops.OperationError):
        ops.load_key("ecdsa-p384", materials["ecdsa-p256"], key_id=KEY_ID, version=1)


def test_data_key_round_trip(materials) -> None:
    key = loaded(materials, "aes-256-gcm")
    data_key, wrapped = ops.generate_data_key(key, {"file": "a.txt"})
    assert len(data_key) == 32
    assert ops.decrypt(key, ops.parse_token(wrapped), {"file": "a.txt"}) == data_key


def test_wrong_operations_for_a_type_are_refused(materials) -> None:
    with pytest.raises(ops.OperationError):
        ops.encrypt(loaded(materials, "ed25519"), b"x")
    with pytest.raises(ops.OperationError):
        ops.sign(loaded(materials, "aes-256-gcm"), b"x")
    with pytest.raises(ops.OperationError):
        ops.mac(loaded(materials, "aes-256-gcm"), b"x")
    with pytest.raises(ops.OperationError) as caught:
        ops.encrypt(loaded(materials, "rsa-3072"), bytes(400))
    assert caught.value.code == "input_too_large"


@pytest.mark.parametrize(
    "context", [{"a": 1}, ["a"], {"": "x"}, {"a": "x" * 300}, {str(i): "v" for i in range(40)}]
)
def test_bad_context_is_refused(context) -> None:
    with pytest.raises(ops.OperationError) as caught:
        ops.context_bytes(context)
    assert caught.value.code == "bad_context"


def test_loaded_key_repr_shows_no_material(materials) -> None:
    key = loaded(materials, "hmac-sha256")
    assert materials["hmac-sha256"].hex() not in repr(key)
    assert str(materials["hmac-sha256"]) not in repr(key)


# --- the token's base64url: standard library and pybase64 give the same tokens ------------------

CODECS = {"stdlib": ops.STDLIB_CODEC, "pybase64": ops.PYBASE64_CODEC}


def test_pybase64_is_there_on_the_server() -> None:
    """The server depends on pybase64 and uses it; kmsclient's wheel may run without it."""
    assert ops.PYBASE64_CODEC is not None
    assert (ops._b64url_encode, ops._b64url_decode) == ops.PYBASE64_CODEC


@pytest.mark.parametrize("length", [*range(0, 70), 1062, 65536 + 50])
def test_both_encoders_give_byte_identical_text(length: int) -> None:
    blob = bytes((i * 151 + length) % 256 for i in range(length))
    stdlib, fast = CODECS["stdlib"], CODECS["pybase64"]
    assert fast is not None
    text = stdlib[0](blob)
    assert fast[0](blob) == text == _b64url(blob)
    assert stdlib[1](text) == fast[1](text) == blob


def _tokens_with(monkeypatch, codec_name: str, materials: dict[str, bytes]) -> list[str]:
    codec = CODECS[codec_name]
    assert codec is not None
    monkeypatch.setattr(ops, "_b64url_encode", codec[0])
    monkeypatch.setattr(ops, "_b64url_decode", codec[1])
    header = ops._header(ops.KIND_AES_GCM, KEY_ID, 3)
    return [ops._encode(header, bytes(range(n % 256)) * (n // 256 + 1)) for n in range(40)]


def test_both_codecs_make_and_read_the_same_tokens(monkeypatch, materials) -> None:
    plain = _tokens_with(monkeypatch, "stdlib", materials)
    fast = _tokens_with(monkeypatch, "pybase64", materials)
    assert plain == fast
    key = loaded(materials, "aes-256-gcm")
    for name in CODECS:
        codec = CODECS[name]
        assert codec is not None
        monkeypatch.setattr(ops, "_b64url_encode", codec[0])
        monkeypatch.setattr(ops, "_b64url_decode", codec[1])
        token = ops.encrypt(key, b"secret", {"a": "1"})
        for other in CODECS.values():
            assert other is not None
            monkeypatch.setattr(ops, "_b64url_encode", other[0])
            monkeypatch.setattr(ops, "_b64url_decode", other[1])
            assert ops.decrypt(key, ops.parse_token(token), {"a": "1"}) == b"secret"


def _malformed(good: str) -> list[str]:
    body = good[len("kms:v1:") :]
    # A final character whose unused low bits are set (not canonical): the blob of a good
    # token is 22 + 28 + 6 = 56 bytes, so its last character carries 4 data bits and 2
    # unused ones (zero in the canonical encoding).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = alphabet[alphabet.index(body[-1]) | 1]
    return [
        good + "=",  # padding
        good + "==",
        good[:-1] + stray,  # stray bits in the last character
        good[:-4] + "+/" + good[-2:],  # the standard alphabet, not the URL-safe one
        good[:10] + "*" + good[11:],  # outside any alphabet
        good[:10] + " " + good[11:],
        good[:10] + "\n" + good[11:],
        good + "AA",  # a length no encoding has (4n + 1 characters)
        good[:12] + "é" + good[13:],  # not ASCII
        "kms:v1:" + body[:4],  # too short for a header
        "kms:v1:",
    ]


def test_both_decoders_refuse_the_same_malformed_tokens(monkeypatch, materials) -> None:
    key = loaded(materials, "aes-256-gcm")
    good = ops.encrypt(key, b"x" * 6)
    assert len(good) - len("kms:v1:") == 75  # 56 bytes: 18 full quanta + 2 bytes
    outcomes: dict[str, list[str]] = {}
    for name, codec in CODECS.items():
        assert codec is not None
        monkeypatch.setattr(ops, "_b64url_encode", codec[0])
        monkeypatch.setattr(ops, "_b64url_decode", codec[1])
        assert ops.parse_token(good).version == 1
        codes = []
        for bad in _malformed(good):
            with pytest.raises(ops.OperationError) as caught:
                ops.parse_token(bad)
            codes.append(caught.value.code)
        outcomes[name] = codes
    assert outcomes["stdlib"] == outcomes["pybase64"]
    assert set(outcomes["stdlib"]) == {"bad_ciphertext"}
