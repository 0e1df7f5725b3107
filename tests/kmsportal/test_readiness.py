"""`/readyz`: a load balancer routes to a node only while it reaches its database and cache."""

from __future__ import annotations

import pytest
from django.test import Client

UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        # Port 1 on loopback: nothing listens, the connection is refused at once.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


@pytest.mark.django_db
def test_a_node_with_its_database_and_cache_is_ready(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.content == b"ready\n"
    assert response["Cache-Control"].startswith("max-age=0")
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405


@pytest.mark.django_db
def test_a_node_that_cannot_reach_its_cache_is_not_ready(client: Client, settings) -> None:
    settings.CACHES = UNREACHABLE_REDIS
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content == b"not ready: the cache does not answer\n"
    # Liveness is a different question: the worker itself is fine.
    assert client.get("/healthz").status_code == 200
