"""Tests for kmsportal.crypto.envelope: sealed blob format, tampering, rotation."""

from __future__ import annotations

import re

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto.envelope import (
    EnvelopeError,
    EnvelopeFormatError,
    EnvelopeIntegrityError,
    EnvelopeUnknownKeyError,
    Keyring,
)
from kmsportal.crypto.kek import MasterKeyProvider, StaticKeyProvider, UnknownMasterKeyError

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(50, 82))
KEY_3 = bytes(range(200, 232))
AAD = b"vault.KeyVersion:6f1c1b1e-3a55-4f0e-9d2c-0b7c1c2d3e4f:1"
SECRET = b"a 32-byte data key, say........."

NONCE_SIZE = 12
TAG_SIZE = 16


def keyring(*key_ids: str) -> Keyring:
    keys = {"k1": KEY_1, "k2": KEY_2, "k3": KEY_3}
    return Keyring(StaticKeyProvider([(key_id, keys[key_id]) for key_id in key_ids]))


def split_blob(blob: bytes) -> tuple[bytes, str, bytes, bytes]:
    """Independent parser for the documented v1 layout: header, key id, nonce, ct||tag."""
    length = blob[1]
    header_end = 2 + length
    return (
        blob[:header_end],
        blob[2:header_end].decode("ascii"),
        blob[header_end : header_end + NONCE_SIZE],
        blob[header_end + NONCE_SIZE :],
    )


def flip(blob: bytes, index: int) -> bytes:
    mutable = bytearray(blob)
    mutable[index] ^= 0x01
    return bytes(mutable)


# --- round trip and format -----------------------------------------------------------------


@pytest.mark.parametrize("plaintext", [b"", b"x", SECRET, bytes(range(256)) * 40])
def test_round_trip(plaintext: bytes) -> None:
    ring = keyring("k1")
    assert ring.unseal(ring.seal(plaintext, AAD), AAD) == plaintext


def test_round_trip_with_empty_aad() -> None:
    ring = keyring("k1")
    assert ring.unseal(ring.seal(SECRET, b""), b"") == SECRET


def test_unseal_accepts_memoryview_and_bytearray() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    assert ring.unseal(memoryview(blob), AAD) == SECRET
    assert ring.unseal(bytearray(blob), AAD) == SECRET


def test_blob_layout_matches_documented_format() -> None:
    ring = keyring("k2", "k1")
    blob = ring.seal(SECRET, AAD)
    header, key_id, nonce, sealed = split_blob(blob)
    assert header == b"\x01\x02k2"
    assert key_id == "k2"
    assert len(nonce) == NONCE_SIZE
    assert len(sealed) == len(SECRET) + TAG_SIZE
    assert len(blob) == 1 + 1 + 2 + NONCE_SIZE + len(SECRET) + TAG_SIZE
    # The GCM associated data is header || caller's aad: decrypt with raw AES-GCM to prove it.
    assert AESGCM(KEY_2).decrypt(nonce, sealed, header + AAD) == SECRET
    with pytest.raises(InvalidTag):
        AESGCM(KEY_2).decrypt(nonce, sealed, AAD)


def test_sealing_same_plaintext_twice_gives_different_blobs() -> None:
    ring = keyring("k1")
    first, second = ring.seal(SECRET, AAD), ring.seal(SECRET, AAD)
    assert first != second
    assert split_blob(first)[2] != split_blob(second)[2]
    assert ring.unseal(first, AAD) == ring.unseal(second, AAD) == SECRET


def test_no_nonce_repeats_in_100k_seals() -> None:
    ring = keyring("k1")
    nonce_start = 2 + len("k1")
    nonce_end = nonce_start + NONCE_SIZE
    nonces = {ring.seal(b"", b"")[nonce_start:nonce_end] for _ in range(100_000)}
    assert len(nonces) == 100_000


# --- tampering -----------------------------------------------------------------------------


def test_tampered_format_version_is_rejected() -> None:
    blob = keyring("k1").seal(SECRET, AAD)
    for version in (0x00, 0x02, 0xFF):
        tampered = bytes([version]) + blob[1:]
        with pytest.raises(
            EnvelopeFormatError, match=f"unknown sealed blob format version {version}"
        ):
            keyring("k1").unseal(tampered, AAD)


def test_key_id_relabelled_to_another_known_key_fails_integrity() -> None:
    ring = keyring("k1", "k2")
    blob = ring.seal(SECRET, AAD)
    assert blob[2:4] == b"k1"
    relabelled = blob[:2] + b"k2" + blob[4:]
    assert ring.blob_key_id(relabelled) == "k2"
    with pytest.raises(EnvelopeIntegrityError):
        ring.unseal(relabelled, AAD)


def test_key_id_relabelled_to_unknown_key_names_the_key() -> None:
    ring = keyring("k1", "k2")
    blob = ring.seal(SECRET, AAD)
    relabelled = blob[:2] + b"k9" + blob[4:]
    expected = "sealed blob uses master key 'k9', which is not in the keyring (KMS_MASTER_KEYS)"
    with pytest.raises(EnvelopeUnknownKeyError, match=re.escape(expected)) as excinfo:
        ring.unseal(relabelled, AAD)
    assert excinfo.value.key_id == "k9"


def test_key_id_length_byte_tampered() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for length in (0, 33, 255):
        with pytest.raises(EnvelopeFormatError, match=f"bad key id length {length}"):
            ring.unseal(blob[:1] + bytes([length]) + blob[2:], AAD)
    # A plausible length shifts the header; the key id is then garbage or fails integrity.
    with pytest.raises(EnvelopeError):
        ring.unseal(blob[:1] + bytes([3]) + blob[2:], AAD)


def test_key_id_with_invalid_characters_is_a_format_error() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for bad in (b"k\n", b"k\xff", b"k "):
        with pytest.raises(EnvelopeFormatError, match="invalid key id"):
            ring.unseal(blob[:2] + bad + blob[4:], AAD)


def test_every_nonce_byte_is_authenticated() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for index in range(4, 4 + NONCE_SIZE):
        with pytest.raises(EnvelopeIntegrityError):
            ring.unseal(flip(blob, index), AAD)


def test_every_ciphertext_byte_is_authenticated() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    start = 4 + NONCE_SIZE
    for index in range(start, len(blob) - TAG_SIZE):
        with pytest.raises(EnvelopeIntegrityError):
            ring.unseal(flip(blob, index), AAD)


def test_every_tag_byte_is_authenticated() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for index in range(len(blob) - TAG_SIZE, len(blob)):
        with pytest.raises(EnvelopeIntegrityError):
            ring.unseal(flip(blob, index), AAD)


def test_integrity_error_message() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    expected = "sealed blob failed integrity check (tampered, or wrong associated data)"
    with pytest.raises(EnvelopeIntegrityError, match=re.escape(expected)) as excinfo:
        ring.unseal(flip(blob, len(blob) - 1), AAD)
    assert excinfo.value.__cause__ is None
    assert SECRET.decode() not in str(excinfo.value)


def test_every_truncation_fails() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for length in range(len(blob)):
        with pytest.raises((EnvelopeFormatError, EnvelopeIntegrityError)):
            ring.unseal(blob[:length], AAD)


def test_truncation_below_minimum_size_is_a_format_error() -> None:
    ring = keyring("k1")
    blob = ring.seal(b"", AAD)  # header + nonce + tag only
    for length in range(1, len(blob)):
        with pytest.raises(EnvelopeFormatError, match="truncated"):
            ring.unseal(blob[:length], AAD)


def test_truncated_tag_with_long_plaintext_fails_integrity() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    with pytest.raises(EnvelopeIntegrityError):
        ring.unseal(blob[:-1], AAD)


def test_appended_bytes_fail_integrity() -> None:
    ring = keyring("k1")
    with pytest.raises(EnvelopeIntegrityError):
        ring.unseal(ring.seal(SECRET, AAD) + b"\x00", AAD)


def test_empty_blob_is_a_format_error() -> None:
    with pytest.raises(EnvelopeFormatError, match="sealed blob is empty"):
        keyring("k1").unseal(b"", AAD)


def test_wrong_aad_fails() -> None:
    ring = keyring("k1")
    blob = ring.seal(SECRET, AAD)
    for wrong in (b"", AAD[:-1] + b"2", AAD + b"x", b"vault.KeyVersion:other:1"):
        with pytest.raises(EnvelopeIntegrityError):
            ring.unseal(blob, wrong)


def test_exception_hierarchy() -> None:
    assert issubclass(EnvelopeFormatError, EnvelopeError)
    assert issubclass(EnvelopeIntegrityError, EnvelopeError)
    assert issubclass(EnvelopeUnknownKeyError, EnvelopeError)
    assert issubclass(EnvelopeUnknownKeyError, UnknownMasterKeyError)
    assert not issubclass(UnknownMasterKeyError, EnvelopeError)


# --- rotation ------------------------------------------------------------------------------


def test_blob_sealed_under_old_key_unseals_after_new_key_is_primary() -> None:
    old_blob = keyring("k1").seal(SECRET, AAD)
    rotated = keyring("k2", "k1")
    assert rotated.primary_key_id == "k2"
    assert rotated.unseal(old_blob, AAD) == SECRET


def test_rewrap_moves_blob_to_new_primary() -> None:
    old_blob = keyring("k1").seal(SECRET, AAD)
    rotated = keyring("k2", "k1")
    assert rotated.blob_key_id(old_blob) == "k1"
    assert rotated.needs_rewrap(old_blob)

    new_blob = rotated.rewrap(old_blob, AAD)
    assert rotated.blob_key_id(new_blob) == "k2"
    assert not rotated.needs_rewrap(new_blob)
    assert rotated.unseal(new_blob, AAD) == SECRET
    # Once rewrapped, the old key can be retired.
    assert keyring("k2").unseal(new_blob, AAD) == SECRET


def test_rewrap_keeps_the_blob_bound_to_its_aad() -> None:
    rotated = keyring("k2", "k1")
    new_blob = rotated.rewrap(keyring("k1").seal(SECRET, AAD), AAD)
    with pytest.raises(EnvelopeIntegrityError):
        rotated.unseal(new_blob, b"vault.KeyVersion:other:1")


def test_rewrap_with_wrong_aad_fails() -> None:
    old_blob = keyring("k1").seal(SECRET, AAD)
    with pytest.raises(EnvelopeIntegrityError):
        keyring("k2", "k1").rewrap(old_blob, b"wrong")


def test_blob_from_retired_key_is_unknown_key_error() -> None:
    old_blob = keyring("k1").seal(SECRET, AAD)
    with pytest.raises(EnvelopeUnknownKeyError, match="'k1'") as excinfo:
        keyring("k2", "k3").unseal(old_blob, AAD)
    assert excinfo.value.key_id == "k1"
    # Also catchable as the keyring-level error.
    assert isinstance(excinfo.value, UnknownMasterKeyError)


def test_blob_key_id_rejects_malformed_blobs() -> None:
    ring = keyring("k1")
    with pytest.raises(EnvelopeFormatError):
        ring.blob_key_id(b"")
    with pytest.raises(EnvelopeFormatError):
        ring.needs_rewrap(b"\x02" + ring.seal(SECRET, AAD)[1:])


# --- keyring properties and argument validation ----------------------------------------------


def test_keyring_properties() -> None:
    ring = keyring("k3", "k1", "k2")
    provider = StaticKeyProvider([("k3", KEY_3), ("k1", KEY_1), ("k2", KEY_2)])
    assert ring.primary_key_id == "k3"
    assert ring.key_ids == ("k3", "k1", "k2")
    kcvs = ring.key_check_values()
    assert list(kcvs) == ["k3", "k1", "k2"]
    assert kcvs == {key_id: provider.key_check_value(key_id) for key_id in provider.key_ids}
    assert "k3" in repr(ring)


@pytest.mark.parametrize(
    ("plaintext", "aad"),
    [("text", AAD), (SECRET, "text"), (bytearray(SECRET), AAD), (SECRET, None), (None, AAD)],
)
def test_seal_rejects_non_bytes(plaintext: object, aad: object) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        keyring("k1").seal(plaintext, aad)  # type: ignore[arg-type]


@pytest.mark.parametrize("aad", ["text", None, bytearray(AAD)])
def test_unseal_rejects_non_bytes_aad(aad: object) -> None:
    ring = keyring("k1")
    with pytest.raises(TypeError, match="aad must be bytes"):
        ring.unseal(ring.seal(SECRET, AAD), aad)  # type: ignore[arg-type]


@pytest.mark.parametrize("blob", ["text", None, 42])
def test_unseal_rejects_non_bytes_blob(blob: object) -> None:
    with pytest.raises(TypeError, match="sealed blob must be bytes"):
        keyring("k1").unseal(blob, AAD)  # type: ignore[arg-type]


def test_keyring_requires_a_provider() -> None:
    with pytest.raises(TypeError):
        Keyring(object())  # type: ignore[arg-type]


# --- pluggable providers -------------------------------------------------------------------


class OpaqueProvider(MasterKeyProvider):
    """Stand-in for an HSM: exposes no key bytes, only the operations of the interface."""

    def __init__(self) -> None:
        self._inner = StaticKeyProvider([("hsm-1", KEY_3)], source="test HSM")
        self.calls: list[str] = []

    @property
    def primary_key_id(self) -> str:
        return self._inner.primary_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._inner.key_ids

    def encrypt(self, key_id: str, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        self.calls.append("encrypt")
        return self._inner.encrypt(key_id, nonce, plaintext, associated_data)

    def decrypt(
        self, key_id: str, nonce: bytes, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        self.calls.append("decrypt")
        return self._inner.decrypt(key_id, nonce, ciphertext, associated_data)

    def key_check_value(self, key_id: str) -> str:
        return self._inner.key_check_value(key_id)


def test_keyring_works_with_any_provider() -> None:
    provider = OpaqueProvider()
    ring = Keyring(provider)
    blob = ring.seal(SECRET, AAD)
    assert ring.blob_key_id(blob) == "hsm-1"
    assert ring.unseal(blob, AAD) == SECRET
    assert provider.calls == ["encrypt", "decrypt"]
    with pytest.raises(EnvelopeUnknownKeyError, match=re.escape("(test HSM)")):
        ring.unseal(keyring("k1").seal(SECRET, AAD), AAD)
