"""Vault: the key list page at 100k keys against the same page at 10 keys, and key creation
through the service.

Pages are fetched through Django's test client (the whole stack but the socket: middleware,
session, permission check, selector, template), signed in through the real sign-in form as an
auditor (auditors read every list and need no second factor). Keys are bulk-inserted rows;
each page is timed at 10 keys and again once the table holds 100k (quick: 10k), with the same
query. Target: at most 2x the 10-key page.

Key creation: ``symmetric_key_create`` (CSPRNG, seal, key and version rows, audit event, one
transaction) against ``os.urandom(32)`` and a bare AES-GCM seal with a reused ``AESGCM``
object, in the same process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bench.harness import BENCH_PASSWORD, Row, analyze, bench_user, measure, measure_seconds

PAGE_TARGET = "<= 2"


def _signed_in_client():  # type: ignore[no-untyped-def]
    """A test client signed in through the real sign-in form as a new auditor."""
    from django.test import Client

    from accounts.roles import Role

    user = bench_user(Role.AUDITOR)
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": BENCH_PASSWORD}
    )
    assert response.status_code == 302, f"sign-in answered {response.status_code}"
    assert "/mfa/" not in response.headers["Location"], "an auditor was asked for MFA"
    return client


def page_timer(client, path: str, *, repeats: int) -> Callable[[dict[str, str]], tuple]:  # type: ignore[no-untyped-def]
    """A function timing GET ``path`` with a query: (median seconds, spread)."""

    def timed(query: dict[str, str]) -> tuple[float, float]:
        def get() -> None:
            response = client.get(path, query)
            assert response.status_code == 200, f"{path} {query} answered {response.status_code}"

        return measure_seconds(get, repeats=repeats)

    return timed


def page_rows(
    *,
    what: str,
    label: str,
    small: dict[str, tuple[float, float]],
    big: dict[str, tuple[float, float]],
    small_label: str,
    database: str,
) -> list[Row]:
    """One row per page variant: the big table's page against the same page at ~10 rows."""
    return [
        Row(
            f"{what} list page at {label}: {variant}",
            big[variant][0],
            big[variant][1],
            f"same page at {small_label}",
            small[variant][0],
            small[variant][1],
            "s",
            database,
            target=PAGE_TARGET,
        )
        for variant in big
    ]


def _bulk_keys(first: int, count: int) -> None:
    from django.utils import timezone

    from vault.models import SymmetricKey

    now = timezone.now()
    batch = []
    for i in range(first, first + count):
        batch.append(
            SymmetricKey(
                name=f"key-{i:07d}",
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

    size = 10_000 if quick else 100_000
    timed = page_timer(_signed_in_client(), "/keys/", repeats=9 if quick else 15)

    def pages(total: int) -> dict[str, tuple[float, float]]:
        return {
            "first page": timed({}),
            "state filter": timed({"state": "active"}),
            "a late page (keyset)": timed({"after": f"key-{max(0, total - 60):07d}"}),
        }

    _bulk_keys(0, 10)
    small = pages(10)
    _bulk_keys(10, size - 10)
    analyze()
    big = pages(size)
    label = f"{size // 1000}k keys"
    rows = page_rows(
        what="key", label=label, small=small, big=big, small_label="10 keys", database=database
    )

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
    rows.insert(
        0,
        Row(
            "create a key (service: CSPRNG, seal, rows, audit)",
            ours,
            spread,
            "os.urandom + AES-GCM seal (bare, reused AESGCM)",
            base,
            base_spread,
            "keys/s",
            database,
            note=f"{count} keys per run, {label} already in the table",
        ),
    )
    return rows
