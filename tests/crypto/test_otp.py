"""TOTP (RFC 6238) and recovery codes: known answers, round trips, and what must fail."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from kmsportal.crypto import otp

# RFC 6238 appendix B, SHA-1 rows: the 20-byte ASCII seed, Unix time, 8-digit TOTP. Our codes
# have 6 digits: the same HOTP value mod 10**6, i.e. the last six digits.
RFC6238_SEED = b"12345678901234567890"
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_time", "eight_digits"), RFC6238_SHA1)
def test_rfc6238_sha1_vectors(unix_time: int, eight_digits: str) -> None:
    step = otp.totp_step(unix_time)
    assert step == unix_time // 30
    assert otp.totp_code(RFC6238_SEED, step) == eight_digits[-6:]
    assert otp.totp_verify(RFC6238_SEED, eight_digits[-6:], at=unix_time) == step


def test_codes_keep_leading_zeros() -> None:
    code = otp.totp_code(RFC6238_SEED, otp.totp_step(1111111109))
    assert code == "081804" and len(code) == 6


def test_verify_accepts_one_step_either_side_and_names_it() -> None:
    secret = otp.totp_secret_generate()
    now = 1_700_000_015.0
    current = otp.totp_step(now)
    for offset in (-1, 0, 1):
        code = otp.totp_code(secret, current + offset)
        assert otp.totp_verify(secret, code, at=now) == current + offset
    for offset in (-3, -2, 2, 3):
        code = otp.totp_code(secret, current + offset)
        if code not in {otp.totp_code(secret, current + d) for d in (-1, 0, 1)}:
            assert otp.totp_verify(secret, code, at=now) is None


def test_verify_tolerates_spaces_and_refuses_malformed_input() -> None:
    secret = otp.totp_secret_generate()
    now = 1_700_000_000.0
    code = otp.totp_code(secret, otp.totp_step(now))
    assert otp.totp_verify(secret, f" {code[:3]} {code[3:]} ", at=now) is not None
    for bad in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦", code + "0", "-" + code[1:]):
        assert otp.totp_verify(secret, bad, at=now) is None


def test_another_secret_does_not_verify() -> None:
    secret, other = otp.totp_secret_generate(), otp.totp_secret_generate()
    now = 1_700_000_000.0
    step = otp.totp_step(now)
    window = {otp.totp_code(other, step + d) for d in (-1, 0, 1)}
    code = otp.totp_code(secret, step)
    if code not in window:  # a one-in-a-million collision would make the test meaningless
        assert otp.totp_verify(other, code, at=now) is None


def test_secret_is_160_random_bits() -> None:
    secrets_seen = {otp.totp_secret_generate() for _ in range(50)}
    assert len(secrets_seen) == 50
    assert all(len(s) == 20 for s in secrets_seen)


def test_provisioning_uri() -> None:
    secret = otp.totp_secret_generate()
    uri = otp.totp_provisioning_uri(secret, username="alice admin")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/kmsportal:alice admin"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "secret": otp.totp_secret_base32(secret),
        "issuer": "kmsportal",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }
    assert "=" not in query["secret"] and len(query["secret"]) == 32
    assert base64.b32decode(query["secret"]) == secret


def test_base32_secret_has_no_padding_and_round_trips() -> None:
    for length in (10, 16, 20):
        secret = bytes(range(length))
        text = otp.totp_secret_base32(secret)
        assert "=" not in text
        assert base64.b32decode(text + "=" * (-len(text) % 8)) == secret


def test_recovery_codes_format_and_entropy() -> None:
    codes = otp.recovery_codes_generate()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        groups = code.split("-")
        assert [len(g) for g in groups] == [4, 4, 4, 4]
        raw = "".join(groups)
        assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        assert len(base64.b32decode(raw)) == 10  # 80 bits


def test_recovery_code_input_is_case_and_hyphen_insensitive() -> None:
    code = otp.recovery_codes_generate(1)[0]
    expected = hashlib.sha256(code.replace("-", "").encode()).hexdigest()
    for typed in (code, code.lower(), code.replace("-", ""), f" {code.replace('-', ' ')} "):
        assert otp.recovery_code_hash(typed) == expected


def test_recovery_code_hash_refuses_what_is_not_a_code() -> None:
    code = otp.recovery_codes_generate(1)[0]
    for bad in ("", "123456", code[:-1], code + "A", code.replace(code[0], "1", 1)):
        assert otp.recovery_code_normalise(bad) is None
        with pytest.raises(ValueError):
            otp.recovery_code_hash(bad)


def test_a_changed_recovery_code_hashes_differently() -> None:
    code = otp.recovery_codes_generate(1)[0]
    flipped = ("B" if code[0] == "A" else "A") + code[1:]
    assert otp.recovery_code_hash(flipped) != otp.recovery_code_hash(code)
