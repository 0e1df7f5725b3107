"""Tests for kmsportal.crypto.dh: group constants, RFC vectors, peer validation."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from kmsportal.crypto.dh import (
    FFDHE3072,
    FFDHE3072_BYTES,
    FFDHE3072_G,
    FFDHE3072_P,
    GROUPS,
    X25519,
    DHError,
    EphemeralKeyPair,
    generate_ephemeral,
    hkdf_sha256,
    public_key_length,
)

# RFC 7748 §6.1
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# Points of small order on Curve25519 (and non-canonical encodings of them): every one of
# them makes X25519 output all zeros, whatever the private key.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


# --- the ffdhe3072 constant ---------------------------------------------------------------


def test_ffdhe3072_prime_matches_the_rfc_7919_formula() -> None:
    # RFC 7919 Appendix A.2: p = 2^3072 - 2^3008 + {[2^2942 * e] + 2625351} * 2^64 - 1.
    with localcontext() as context:
        context.prec = 1000  # 2^2942 * e has 886 decimal digits before the point
        e = Decimal(1).exp()
        floor_term = int((Decimal(2) ** 2942 * e).to_integral_value(rounding=ROUND_FLOOR))
    expected = 2**3072 - 2**3008 + (floor_term + 2625351) * 2**64 - 1
    assert expected == FFDHE3072_P


def test_ffdhe3072_prime_shape() -> None:
    assert FFDHE3072_P.bit_length() == 3072
    assert FFDHE3072_BYTES * 8 == 3072
    assert FFDHE3072_G == 2
    digits = f"{FFDHE3072_P:X}"
    # First and last words as printed in RFC 7919 Appendix A.2.
    assert digits.startswith("FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1")
    assert digits.endswith(
        "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF"
    )


def test_ffdhe3072_prime_and_its_half_pass_a_fermat_test() -> None:
    # Cheap sanity check (a full safe-prime proof is too slow for the suite).
    q = (FFDHE3072_P - 1) // 2
    assert pow(3, FFDHE3072_P - 1, FFDHE3072_P) == 1
    assert pow(3, q - 1, q) == 1


def test_groups() -> None:
    assert GROUPS[0] == X25519 == "x25519"
    assert set(GROUPS) == {"x25519", "ffdhe3072"}
    assert public_key_length(X25519) == 32
    assert public_key_length(FFDHE3072) == 384


@pytest.mark.parametrize("group", ["x448", "ffdhe2048", "", "X25519"])
def test_unknown_group_is_refused_by_name(group: str) -> None:
    with pytest.raises(DHError, match=repr(group)):
        generate_ephemeral(group)
    with pytest.raises(DHError, match=repr(group)):
        public_key_length(group)


# --- X25519 ------------------------------------------------------------------------------


def test_rfc_7748_x25519_vector() -> None:
    alice = EphemeralKeyPair.from_private_bytes(X25519, ALICE_PRIVATE)
    bob = EphemeralKeyPair.from_private_bytes(X25519, BOB_PRIVATE)
    assert alice.public_bytes() == ALICE_PUBLIC
    assert bob.public_bytes() == BOB_PUBLIC
    assert alice.exchange(BOB_PUBLIC) == SHARED
    assert bob.exchange(ALICE_PUBLIC) == SHARED


def test_from_private_bytes_is_x25519_only() -> None:
    with pytest.raises(DHError, match="only 'x25519'"):
        EphemeralKeyPair.from_private_bytes(FFDHE3072, bytes(32))
    with pytest.raises(DHError, match="32 bytes"):
        EphemeralKeyPair.from_private_bytes(X25519, bytes(31))


@pytest.mark.parametrize("group", GROUPS)
def test_round_trip(group: str) -> None:
    alice, bob = generate_ephemeral(group), generate_ephemeral(group)
    size = public_key_length(group)
    assert alice.group == group
    assert len(alice.public_bytes()) == len(bob.public_bytes()) == size
    secret = alice.exchange(bob.public_bytes())
    assert secret == bob.exchange(alice.public_bytes())
    assert len(secret) == size
    assert alice.public_bytes() != bob.public_bytes()


def test_x25519_interoperates_with_cryptography_directly() -> None:
    ours = generate_ephemeral(X25519)
    theirs = x25519.X25519PrivateKey.generate()
    theirs_public = theirs.public_key().public_bytes_raw()
    expected = theirs.exchange(x25519.X25519PublicKey.from_public_bytes(ours.public_bytes()))
    assert ours.exchange(theirs_public) == expected


def test_generate_ephemeral_defaults_to_x25519() -> None:
    assert generate_ephemeral().group == X25519


def test_ephemeral_keys_are_fresh() -> None:
    assert len({generate_ephemeral().public_bytes() for _ in range(20)}) == 20


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_x25519_low_order_peer_is_refused(point: bytes) -> None:
    key = generate_ephemeral(X25519)
    with pytest.raises(
        DHError, match=r"^X25519 produced an all-zero shared secret \(low-order peer key\)$"
    ):
        key.exchange(point)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_x25519_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(DHError, match="must be 32 bytes"):
        generate_ephemeral(X25519).exchange(b"\x09" * length)


def test_non_bytes_peer_is_refused() -> None:
    with pytest.raises(DHError, match="bytes"):
        generate_ephemeral(X25519).exchange(bytearray(32))  # type: ignore[arg-type]


# --- ffdhe3072 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [0, 1, FFDHE3072_P - 1, FFDHE3072_P, 2**3072 - 1], ids=["0", "1", "p-1", "p", "max"]
)
def test_ffdhe3072_out_of_range_peer_is_refused(value: int) -> None:
    key = generate_ephemeral(FFDHE3072)
    with pytest.raises(DHError, match=r"^peer public value outside \[2, p-2\]$"):
        key.exchange(value.to_bytes(FFDHE3072_BYTES, "big"))


def test_ffdhe3072_lower_bound_is_accepted() -> None:
    # 2 is the generator: in the subgroup of prime order q.
    secret = generate_ephemeral(FFDHE3072).exchange((2).to_bytes(FFDHE3072_BYTES, "big"))
    assert len(secret) == FFDHE3072_BYTES


@pytest.mark.parametrize(
    "value", [FFDHE3072_P - 2, 5, 13, FFDHE3072_P - 4], ids=["p-2", "5", "13", "p-4"]
)
def test_ffdhe3072_values_outside_the_prime_order_subgroup_are_refused(value: int) -> None:
    """Order 2q, not q (y^q = p-1): RFC 7919 section 5.1's subgroup check. p-2 is in range
    but -2 is a quadratic non-residue for this p; so are 5 and 13 (checked against pow)."""
    q = (FFDHE3072_P - 1) // 2
    assert pow(value, q, FFDHE3072_P) == FFDHE3072_P - 1  # the definition, the slow way
    with pytest.raises(DHError, match="not in the prime-order subgroup"):
        generate_ephemeral(FFDHE3072).exchange(value.to_bytes(FFDHE3072_BYTES, "big"))


def test_ffdhe3072_subgroup_members_are_accepted() -> None:
    q = (FFDHE3072_P - 1) // 2
    for value in (3, 4, 9, pow(2, 12345, FFDHE3072_P)):
        assert pow(value, q, FFDHE3072_P) == 1
        assert len(generate_ephemeral(FFDHE3072).exchange(value.to_bytes(384, "big"))) == 384


@pytest.mark.parametrize("length", [0, 32, 383, 385])
def test_ffdhe3072_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(DHError, match="must be 384 bytes"):
        generate_ephemeral(FFDHE3072).exchange(b"\x02" * length)


def test_ffdhe3072_values_are_left_padded() -> None:
    # A small (but valid) peer value still travels as 384 bytes; so does every public key.
    key = generate_ephemeral(FFDHE3072)
    assert len(key.public_bytes()) == FFDHE3072_BYTES
    assert int.from_bytes(key.public_bytes(), "big") < FFDHE3072_P
    assert len(key.exchange((4).to_bytes(FFDHE3072_BYTES, "big"))) == FFDHE3072_BYTES


def test_discarded_key_cannot_be_used() -> None:
    key = generate_ephemeral(X25519)
    peer = generate_ephemeral(X25519).public_bytes()
    key.discard()
    assert "discarded" in repr(key)
    with pytest.raises(DHError, match="discarded"):
        key.exchange(peer)
    with pytest.raises(DHError, match="discarded"):
        key.public_bytes()


# --- HKDF --------------------------------------------------------------------------------


def test_rfc_5869_test_case_1() -> None:
    okm = hkdf_sha256(
        secret=b"\x0b" * 22,
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm == bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_rfc_5869_test_case_3_empty_salt_and_info() -> None:
    okm = hkdf_sha256(secret=b"\x0b" * 22, salt=b"", info=b"", length=42)
    assert okm == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_hkdf_default_length_is_an_aes_256_key() -> None:
    assert len(hkdf_sha256(secret=b"s", salt=b"n", info=b"i")) == 32
