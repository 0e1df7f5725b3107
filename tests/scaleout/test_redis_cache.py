"""CACHE_URL=redis://...: Django's own Redis backend, and the counters that must be shared by
every node (sign-in lockout, client rate limits) kept in Redis, not in a process.

Each test's cache is Redis database 15, flushed before and after (`redis_cache`); skipped
without Redis. That a counter lives only in Redis is shown by flushing Redis: the lockout or
the limit is gone at once, with nothing left in this process to remember it.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.http import HttpResponse
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.crypto import protocol
from kmsportal.settings import cache_config
from tests.factories import TEST_PASSWORD
from tests.pki.conftest import csr_pem
from tests.scaleout.processes import REDIS_DB_CACHE_TESTS, flush_redis, redis_counters
from vault import clients, server_identity, services
from vault.models import Delivery

REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


def stored(pattern: str) -> dict[str, int]:
    return redis_counters(REDIS_DB_CACHE_TESTS, pattern)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:6379/1",
            {"BACKEND": REDIS_BACKEND, "LOCATION": "redis://127.0.0.1:6379/1"},
        ),
        (
            "rediss://cache.internal:6380/0?socket_connect_timeout=2&socket_timeout=2",
            {
                "BACKEND": REDIS_BACKEND,
                "LOCATION": "rediss://cache.internal:6380/0",
                "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
            },
        ),
        (
            "redis:///run/redis/redis.sock",
            {"BACKEND": REDIS_BACKEND, "LOCATION": "unix:///run/redis/redis.sock"},
        ),
        (
            "locmemcache://kmsportal",
            {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "kmsportal"},
        ),
    ],
)
def test_cache_url_selects_djangos_own_redis_backend(url: str, expected: dict) -> None:
    assert cache_config(url) == expected


@pytest.mark.django_db
def test_the_sign_in_lockout_counts_in_redis(redis_cache: str, make_user) -> None:
    make_user("target", Role.AUDITOR)
    for _ in range(5):
        answer = Client().post(
            "/accounts/login/", {"username": "target", "password": "wrong password 1"}
        )
        assert answer.status_code == 200
    # The count is in Redis, where every node reads it (keyed by an HMAC, not the name).
    counters = stored("*kms:signin:user:*")
    assert list(counters.values()) == [5]
    assert "target" not in next(iter(counters))
    assert stored("*kms:signin:addr:*") == {":1:kms:signin:addr:127.0.0.1": 5}

    locked = Client().post("/accounts/login/", {"username": "target", "password": TEST_PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed sign-in attempts" in locked.content
    assert AuditEvent.objects.filter(action="auth.sign_in_locked").count() == 1

    # Only Redis remembered it: with Redis emptied, the same request signs in.
    flush_redis(REDIS_DB_CACHE_TESTS)
    signed_in = Client().post("/accounts/login/", {"username": "target", "password": TEST_PASSWORD})
    assert signed_in.status_code == 302


@pytest.mark.django_db
def test_the_client_rate_limit_counts_in_redis(redis_cache: str, settings) -> None:
    settings.KMS_CLIENT_RATE_LIMIT = 3
    settings.KMS_IDENTITY_CA_KEY_TYPE = "ecp256"
    server_identity.distribution_bootstrap()
    key = services.symmetric_key_create(actor=None, name="orders-db")
    record, token = clients.client_create(actor=None, name="billing")
    private_key = ec.generate_private_key(ec.SECP256R1())
    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr_pem(private_key).decode())
    _client, certificate, _chain, _mac_key = clients.client_enroll(
        request=protocol.parse_enroll_request(body)
    )
    clients.grant_create(actor=None, client=record, key=key, versions="primary")

    def fetch() -> HttpResponse:
        body, _state = protocol.build_fetch_request(
            key_name="orders-db",
            version=None,
            client_certificate_pem=certificate.certificate_pem,
            client_private_key=private_key,
        )
        return Client().post("/api/v1/keys/fetch", body, content_type="application/json")

    window = settings.KMS_CLIENT_RATE_WINDOW_SECONDS
    if time.time() % window > window - 10:  # keep the requests in one window
        time.sleep(window - time.time() % window + 0.5)
    for _ in range(3):
        assert fetch().status_code == 200
    refused = fetch()
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= window + 1
    counters = stored(f"*kms:rate:{record.pk}:*")
    assert list(counters.values()) == [4], "three deliveries and the refused request"

    # Only Redis remembered it: with Redis emptied, the client is served again.
    flush_redis(REDIS_DB_CACHE_TESTS)
    assert fetch().status_code == 200
    assert Delivery.objects.count() == 4
