"""Vault: key creation through the service, and the key list page at 100k keys.

Baselines in the same process: `os.urandom(32)` + AES-GCM seal with a reused AESGCM object;
the same list page with 10 keys.
"""

from __future__ import annotations

import os
import uuid

from bench.harness import Row, measure, measure_seconds


def _signed_in_client():
    from django.test import Client

    from accounts import services as accounts
    from accounts.roles import Role

    user, _ = accounts.user_create(
        actor=None,
        username=f"bench-{uuid.uuid4().hex[:6]}",
        roles=[Role.KEY_CUSTODIAN],
        password="bench password 12345",
    )
    client = Client()
    client.force_login(user)
    return client


def _bulk_keys(count: int, prefix: str) -> None:
    from django.utils import timezone

    from vault.models import SymmetricKey

    now = timezone.now()
    batch = []
    for i in range(count):
        batch.append(
            SymmetricKey(
                name=f"{prefix}-{i:07d}",
                state="active",
                created_by_name="bench",
                created_at=now,
                rotation_period_days=90,
                next_rotation_at=now,
            )
        )
        if len(batch) == 5000:
            SymmetricKey.objects.bulk_create(batch)
            batch = []
    SymmetricKey.objects.bulk_create(batch)


def run(*, quick: bool, database: str) -> list[Row]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from vault.services import symmetric_key_create

    count = 50 if quick else 300
    counter = iter(range(10**9))

    def create() -> int:
        for _ in range(count):
            symmetric_key_create(actor=None, name=f"bench-{next(counter):07d}")
        return count

    aead = AESGCM(os.urandom(32))

    def raw() -> int:
        for i in range(count):
            aead.encrypt(os.urandom(12), os.urandom(32), f"vault.KeyVersion:{i}:1".encode())
        return count

    base, base_spread = measure(raw, repeats=5)
    ours, spread = measure(create, repeats=3)

    client = _signed_in_client()
    small = "small"
    _bulk_keys(10, small)

    def page(query: dict) -> None:
        response = client.get("/keys/", query)
        assert response.status_code == 200

    t10, s10 = measure_seconds(lambda: page({"q": small}), repeats=15)
    size = 10_000 if quick else 100_000
    _bulk_keys(size, "big")
    t_big, s_big = measure_seconds(lambda: page({}), repeats=15)
    t_filtered, s_filtered = measure_seconds(lambda: page({"state": "active"}), repeats=15)
    t_late, s_late = measure_seconds(lambda: page({"after": f"big-{size - 60:07d}"}), repeats=15)
    label = f"{size // 1000}k"
    return [
        Row(
            "create a key (service: CSPRNG, seal, rows, audit)",
            ours,
            spread,
            "os.urandom + AES-GCM seal",
            base,
            base_spread,
            "keys/s",
            database,
        ),
        Row(
            f"key list page, {label} keys (first page)",
            t_big,
            s_big,
            "same page, 10 keys",
            t10,
            s10,
            "s",
            database,
        ),
        Row(
            f"key list page, {label} keys, state filter",
            t_filtered,
            s_filtered,
            "same page, 10 keys",
            t10,
            s10,
            "s",
            database,
        ),
        Row(
            f"key list page, {label} keys, last page (keyset)",
            t_late,
            s_late,
            "same page, 10 keys",
            t10,
            s10,
            "s",
            database,
        ),
    ]
