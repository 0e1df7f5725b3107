"""Master keyring: seal + unseal of a 32-byte key through the project's keyring, against bare
AES-GCM from `cryptography` in the same process.

Ours: ``kmsportal.keyring.services.seal`` then ``unseal`` (the functions every sealed column
goes through: self-describing header, the header bound into the AAD, a fresh nonce from
``os.urandom``, the provider's reused ``AESGCM`` object). Baseline: one reused ``AESGCM``
object, ``encrypt`` with a fresh ``os.urandom`` nonce then ``decrypt``, same plaintext size
and AAD. No database is involved: `bench/run.py` runs this module once, not per database.
"""

from __future__ import annotations

import os

from bench.harness import Row, measure


def run(*, quick: bool, database: str) -> list[Row]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsportal.keyring.services import seal, unseal

    count = 50_000 if quick else 100_000
    material = os.urandom(32)
    aad = b"vault.KeyVersion:3f1e0c2a-8d4b-4a51-9b8e-0d6f4c1b2a77:1"
    seal(material, aad=aad)  # loads the keyring and records its check value once

    def ours() -> int:
        for _ in range(count):
            assert unseal(seal(material, aad=aad), aad=aad) == material
        return count

    aead = AESGCM(os.urandom(32))

    def bare() -> int:
        for _ in range(count):
            nonce = os.urandom(12)
            assert aead.decrypt(nonce, aead.encrypt(nonce, material, aad), aad) == material
        return count

    base, base_spread = measure(bare, repeats=5)
    rate, rate_spread = measure(ours, repeats=5)
    return [
        Row(
            "seal + unseal a 32-byte key (keyring services: header, AAD binding, fresh nonce)",
            rate,
            rate_spread,
            "bare AESGCM encrypt + decrypt, reused object, os.urandom nonce",
            base,
            base_spread,
            "ops/s",
            database,
            note=f"{count:,} round trips per run",
        )
    ]
