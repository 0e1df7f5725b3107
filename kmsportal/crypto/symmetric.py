"""Symmetric key material: generation and key check values. Pure functions over bytes."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32  # AES-256


def generate_key_material() -> bytes:
    """32 bytes from the operating system's CSPRNG (os.urandom → getrandom(2))."""
    return os.urandom(KEY_BYTES)


def key_check_value(material: bytes) -> str:
    """The classic key check value: the first 3 bytes of AES-ECB(key, 16 zero bytes), hex.

    HSMs and payment systems print the same value, so a custodian can confirm that two
    systems hold the same key without showing it. Three bytes of one known-plaintext block
    reveal nothing usable about an AES-256 key. ECB is used for exactly one block here.
    """
    if len(material) != KEY_BYTES:
        raise ValueError(f"key material must be {KEY_BYTES} bytes")
    encryptor = Cipher(algorithms.AES(material), modes.ECB()).encryptor()  # noqa: S305
    block = encryptor.update(bytes(16)) + encryptor.finalize()
    return block[:3].hex().upper()
