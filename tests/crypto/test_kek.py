"""Tests for kmsportal.crypto.kek: keyring spec parsing, providers, key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from kmsportal.crypto.kek import (
    KeyringConfigError,
    MasterKeyProvider,
    StaticKeyProvider,
    UnknownMasterKeyError,
    generate_dev_keyring_spec,
    parse_master_keys,
    write_keyring_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
# A 32-byte key whose URL-safe base64 form uses '-' and '_' (invalid in standard base64).
URLSAFE_KEY = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode("ascii")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- parse_master_keys ---------------------------------------------------------------------


def test_parse_single_key() -> None:
    assert parse_master_keys(f"k1:{b64(KEY_A)}") == [("k1", KEY_A)]


def test_parse_keeps_order_primary_first() -> None:
    spec = f"k2:{b64(KEY_B)},k1:{b64(KEY_A)}"
    assert parse_master_keys(spec) == [("k2", KEY_B), ("k1", KEY_A)]


def test_parse_tolerates_whitespace_around_entries() -> None:
    spec = f"  k2:{b64(KEY_B)} ,\n\tk1 : {b64(KEY_A)}  \n"
    assert parse_master_keys(spec) == [("k2", KEY_B), ("k1", KEY_A)]


@pytest.mark.parametrize("key_id", ["a", "A-Z_0.9", "x" * 32, "2024-01.rotation_b"])
def test_parse_accepts_valid_key_ids(key_id: str) -> None:
    assert parse_master_keys(f"{key_id}:{b64(KEY_A)}") == [(key_id, KEY_A)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "KMS_MASTER_KEYS is empty"),
        ("   \n\t ", "KMS_MASTER_KEYS is empty"),
        (f"k1:{b64(KEY_A)},k2:not base64!", "KMS_MASTER_KEYS: key 'k2' is not valid base64"),
        (f"k2:{b64(KEY_A)[:-1]}", "KMS_MASTER_KEYS: key 'k2' is not valid base64"),  # padding
        (f"k2:{b64(KEY_A)[:20]} {b64(KEY_A)[20:]}", "key 'k2' is not valid base64"),
        (f"k2:{URLSAFE_KEY}", "key 'k2' is not valid base64"),  # '-' and '_' alphabet
        (f"k2:{b64(bytes(16))}", "KMS_MASTER_KEYS: key 'k2' is 16 bytes, expected 32"),
        (f"k2:{b64(bytes(33))}", "KMS_MASTER_KEYS: key 'k2' is 33 bytes, expected 32"),
        ("k2:", "KMS_MASTER_KEYS: key 'k2' is empty"),
        (f"k1:{b64(KEY_A)},k1:{b64(KEY_B)}", "KMS_MASTER_KEYS: duplicate key id 'k1'"),
        (f"k1:{b64(KEY_A)}, :{b64(KEY_B)}", "KMS_MASTER_KEYS: entry 2 has an empty key id"),
        (f":{b64(KEY_A)}", "KMS_MASTER_KEYS: entry 1 has an empty key id"),
        (f"k 1:{b64(KEY_A)}", "KMS_MASTER_KEYS: entry 1 has an invalid key id"),
        (f"k1:{b64(KEY_A)},k/2:{b64(KEY_B)}", "entry 2 has an invalid key id"),
        (f"{'x' * 33}:{b64(KEY_A)}", "entry 1 has an invalid key id"),
        (f"clé:{b64(KEY_A)}", "entry 1 has an invalid key id"),
        (f"k1:{b64(KEY_A)},", "KMS_MASTER_KEYS: entry 2 is empty"),
        (f"k1:{b64(KEY_A)},,k2:{b64(KEY_B)}", "KMS_MASTER_KEYS: entry 2 is empty"),
        (b64(KEY_A), "KMS_MASTER_KEYS: entry 1 has no ':' separator"),
    ],
)
def test_parse_rejects_malformed_spec(spec: str, message: str) -> None:
    with pytest.raises(KeyringConfigError, match=re.escape(message)):
        parse_master_keys(spec)


@pytest.mark.parametrize(
    "spec",
    [
        b64(KEY_A),  # bare key, no id
        f"{b64(KEY_A)}:k1",  # id and key swapped
        f"k1:{b64(KEY_A)}x",  # corrupt key
        f"k1:{b64(KEY_A + b'!')}",  # wrong length
    ],
)
def test_parse_errors_never_contain_key_material(spec: str) -> None:
    with pytest.raises(KeyringConfigError) as excinfo:
        parse_master_keys(spec)
    message = str(excinfo.value)
    assert b64(KEY_A)[:16] not in message
    assert excinfo.value.__cause__ is None


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(KeyringConfigError, ValueError)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        parse_master_keys(f"k1:{b64(KEY_A)}".encode())  # type: ignore[arg-type]


def test_parse_uses_source_in_messages() -> None:
    with pytest.raises(KeyringConfigError, match=r"^MY_VAR: key 'k1' is 16 bytes"):
        parse_master_keys(f"k1:{b64(bytes(16))}", source="MY_VAR")


# --- StaticKeyProvider ---------------------------------------------------------------------


def make_provider() -> StaticKeyProvider:
    return StaticKeyProvider([("k2", KEY_B), ("k1", KEY_A)])


def test_provider_primary_and_key_ids() -> None:
    provider = make_provider()
    assert provider.primary_key_id == "k2"
    assert provider.key_ids == ("k2", "k1")


def test_provider_from_spec() -> None:
    provider = StaticKeyProvider.from_spec(f"k2:{b64(KEY_B)},k1:{b64(KEY_A)}")
    assert provider.key_ids == ("k2", "k1")
    assert provider.key_check_value("k1") == make_provider().key_check_value("k1")


def test_provider_encrypt_decrypt_round_trip() -> None:
    provider = make_provider()
    nonce = bytes(12)
    sealed = provider.encrypt("k1", nonce, b"secret", b"aad")
    assert len(sealed) == len(b"secret") + 16
    assert provider.decrypt("k1", nonce, sealed, b"aad") == b"secret"
    with pytest.raises(InvalidTag):
        provider.decrypt("k2", nonce, sealed, b"aad")
    with pytest.raises(InvalidTag):
        provider.decrypt("k1", nonce, sealed, b"other")


@pytest.mark.parametrize("nonce", [b"", bytes(8), bytes(13), bytes(16)])
def test_provider_requires_96_bit_nonce(nonce: bytes) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        make_provider().encrypt("k1", nonce, b"x", b"")


def test_provider_matches_gcm_spec_test_case_16() -> None:
    """Known answer: McGrew-Viega GCM spec, AES-256 test case 16 (60-byte PT, 20-byte AAD)."""
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    iv = bytes.fromhex("cafebabefacedbaddecaf888")
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    ciphertext = bytes.fromhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    )
    tag = bytes.fromhex("76fc6ece0f4e1768cddf8853bb2d551b")

    provider = StaticKeyProvider([("tc16", key)])
    assert provider.encrypt("tc16", iv, plaintext, aad) == ciphertext + tag
    assert provider.decrypt("tc16", iv, ciphertext + tag, aad) == plaintext


@pytest.mark.parametrize("operation", ["encrypt", "decrypt", "key_check_value"])
def test_provider_unknown_key_id(operation: str) -> None:
    provider = make_provider()
    expected = "master key 'k9' is not in the keyring (KMS_MASTER_KEYS)"
    with pytest.raises(UnknownMasterKeyError, match=re.escape(expected)) as excinfo:
        if operation == "key_check_value":
            provider.key_check_value("k9")
        else:
            getattr(provider, operation)("k9", bytes(12), bytes(16), b"")
    assert excinfo.value.key_id == "k9"
    assert isinstance(excinfo.value, LookupError)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "KMS_MASTER_KEYS is empty"),
        ([("k1", bytes(16))], "key 'k1' is 16 bytes, expected 32"),
        ([("k1", KEY_A), ("k1", KEY_B)], "duplicate key id 'k1'"),
        ([("k1", KEY_A), ("", KEY_B)], "entry 2 has an invalid key id"),
        ([("k1", bytearray(KEY_A))], "key 'k1' must be bytes"),
    ],
)
def test_provider_validates_keys(keys: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(KeyringConfigError, match=re.escape(message)):
        StaticKeyProvider(keys)


def test_provider_repr_has_no_key_material() -> None:
    text = repr(make_provider())
    assert "k2" in text and "k1" in text
    assert KEY_A.hex()[:8] not in text and b64(KEY_A)[:8] not in text


def test_provider_does_not_keep_raw_keys_as_attributes() -> None:
    provider = make_provider()
    for value in vars(provider).values():
        assert value is not KEY_A and value is not KEY_B
        if isinstance(value, dict):
            assert KEY_A not in value.values() and KEY_B not in value.values()


def test_master_key_provider_is_abstract() -> None:
    with pytest.raises(TypeError):
        MasterKeyProvider()  # type: ignore[abstract]


# --- key check values ----------------------------------------------------------------------


def test_key_check_value_format_and_stability() -> None:
    kcv = make_provider().key_check_value("k1")
    assert re.fullmatch(r"[0-9a-f]{16}", kcv)
    # Stable: same key under another id / another provider gives the same KCV.
    assert StaticKeyProvider([("other", KEY_A)]).key_check_value("other") == kcv


def test_key_check_value_is_documented_hmac() -> None:
    expected = hmac.new(KEY_A, b"kmsportal master key check value v1", hashlib.sha256)
    assert make_provider().key_check_value("k1") == expected.digest()[:8].hex()


def test_key_check_value_differs_across_keys() -> None:
    provider = make_provider()
    assert provider.key_check_value("k1") != provider.key_check_value("k2")


def test_key_check_value_does_not_reveal_key() -> None:
    provider = make_provider()
    for key_id, key in (("k1", KEY_A), ("k2", KEY_B)):
        kcv = provider.key_check_value(key_id)
        assert kcv not in key.hex()
        assert key.hex()[:16] != kcv


# --- generate_dev_keyring_spec ---------------------------------------------------------------


def test_generate_dev_keyring_spec() -> None:
    spec = generate_dev_keyring_spec()
    [(key_id, key)] = parse_master_keys(spec)
    assert key_id == "dev1"
    assert len(key) == 32
    assert generate_dev_keyring_spec() != spec


def test_generate_dev_keyring_spec_custom_id() -> None:
    [(key_id, _)] = parse_master_keys(generate_dev_keyring_spec("local-2"))
    assert key_id == "local-2"


def test_generate_dev_keyring_spec_rejects_bad_id() -> None:
    with pytest.raises(KeyringConfigError, match="invalid key id"):
        generate_dev_keyring_spec("bad id")


# --- keyring files -------------------------------------------------------------------------


def test_write_keyring_file_mode_0600_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "master.keys"
    spec = generate_dev_keyring_spec()
    write_keyring_file(path, spec)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == spec + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.keys"]  # no temp left

    from_file = StaticKeyProvider.from_file(path)
    from_spec = StaticKeyProvider.from_spec(spec)
    assert from_file.key_ids == ("dev1",)
    assert from_file.key_check_value("dev1") == from_spec.key_check_value("dev1")


def test_write_keyring_file_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    old_umask = os.umask(0)
    try:
        write_keyring_file(str(path), generate_dev_keyring_spec())
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_keyring_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    original = generate_dev_keyring_spec()
    write_keyring_file(path, original)
    with pytest.raises(FileExistsError):
        write_keyring_file(path, generate_dev_keyring_spec())
    assert path.read_text() == original + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["master.keys"]


def test_write_keyring_file_refuses_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_keyring_file(path, generate_dev_keyring_spec())
    assert not (tmp_path / "elsewhere").exists()


def test_write_keyring_file_rejects_invalid_spec(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    with pytest.raises(KeyringConfigError, match="key 'k1' is 16 bytes"):
        write_keyring_file(path, f"k1:{b64(bytes(16))}")
    assert list(tmp_path.iterdir()) == []


def test_from_file_accepts_multiple_keys_and_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.write_text(f"k2:{b64(KEY_B)},\nk1:{b64(KEY_A)}\n\n")
    assert StaticKeyProvider.from_file(path).key_ids == ("k2", "k1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("k1:not base64\n", "key 'k1' is not valid base64"),
        (f"k1:{b64(bytes(16))}\n", "key 'k1' is 16 bytes, expected 32"),
        ("\n", "is empty"),
        ("", "is empty"),
    ],
)
def test_from_file_error_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "master.keys"
    path.write_text(content)
    with pytest.raises(KeyringConfigError, match=re.escape(message)) as excinfo:
        StaticKeyProvider.from_file(path)
    assert str(path) in str(excinfo.value)


def test_from_file_rejects_non_ascii(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.write_bytes(b"k1:\xff\xfe\n")
    with pytest.raises(KeyringConfigError, match="is not ASCII text") as excinfo:
        StaticKeyProvider.from_file(path)
    assert str(path) in str(excinfo.value)


def test_from_file_unknown_key_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    write_keyring_file(path, generate_dev_keyring_spec())
    with pytest.raises(UnknownMasterKeyError, match=re.escape(str(path))):
        StaticKeyProvider.from_file(path).key_check_value("k9")


def test_from_file_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StaticKeyProvider.from_file(tmp_path / "absent.keys")
