"""Scale-out fixtures: a Redis-backed cache in this process, and two gunicorn nodes sharing
the test database and one Redis.

They skip without Redis (and, for the nodes, without PostgreSQL), saying why; with
KMS_REQUIRE_SCALEOUT set (`.ci/run` sets it) a missing service fails the test instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import caches

from kmsportal.settings import cache_config
from tests.scaleout.processes import (
    REDIS_DB_CACHE_TESTS,
    REDIS_DB_NODES,
    GunicornNode,
    collect_static,
    flush_redis,
    free_port,
    postgres_unavailable_reason,
    process_environment,
    redis_unavailable_reason,
    redis_url,
    require,
    start_gunicorn_node,
)

# The nodes' client API limit (requests per client per minute), low enough for a test to
# reach it through both nodes and high enough for every other test here.
NODE_CLIENT_RATE_LIMIT = 6


@pytest.fixture
def redis_cache(settings) -> Iterator[str]:
    """This process's cache is Redis database 15, configured from a CACHE_URL exactly as
    the settings do it; flushed before and after. Yields the URL."""
    require(redis_unavailable_reason())
    url = redis_url(REDIS_DB_CACHE_TESTS)
    flush_redis(REDIS_DB_CACHE_TESTS)
    settings.CACHES = {"default": cache_config(url), "counters": cache_config(url)}
    assert type(caches["default"]).__name__ == "RedisCache"
    assert type(caches["counters"]).__name__ == "RedisCache"
    yield url
    caches["default"].close()
    caches["counters"].close()
    flush_redis(REDIS_DB_CACHE_TESTS)


@pytest.fixture(scope="module")
def nodes(
    django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[tuple[GunicornNode, GunicornNode]]:
    """Two nodes, A and B, as in production: `gunicorn -c kmsportal/gunicorn.conf.py` with
    DEBUG=false, collected static files, the same SECRET_KEY and master keyring, the same
    database (pytest-django's test database) and the same Redis (database 14). Only
    loopback HTTP differs from a deployment: no TLS in front, so no Secure cookies.
    Certificates name node A in their CRL distribution points (KMS_PUBLIC_URL)."""
    require(postgres_unavailable_reason(), redis_unavailable_reason())
    work = tmp_path_factory.mktemp("scaleout")
    static_root = work / "static"
    collect_static(static_root)
    port_a, port_b = free_port(), free_port()
    while port_b == port_a:
        port_b = free_port()
    with django_db_blocker.unblock():
        environment = process_environment(
            DEBUG="false",
            ALLOWED_HOSTS="127.0.0.1",
            KMS_PUBLIC_URL=f"http://127.0.0.1:{port_a}",
            CACHE_URL=redis_url(REDIS_DB_NODES),
            STATIC_ROOT=str(static_root),
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            SECURE_SSL_REDIRECT="false",
            GUNICORN_WORKERS="2",
            KMS_CLIENT_RATE_LIMIT=str(NODE_CLIENT_RATE_LIMIT),
            LOG_LEVEL="WARNING",
            # Two masters on one machine would share gunicorn's default control socket.
            GUNICORN_CMD_ARGS="--no-control-socket",
        )
    started: list[GunicornNode] = []
    try:
        # One after the other: the first start records the master key check values.
        started.append(start_gunicorn_node("a", port=port_a, environment=environment, log_dir=work))
        started.append(start_gunicorn_node("b", port=port_b, environment=environment, log_dir=work))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()
