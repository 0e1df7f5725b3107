"""Other processes on the test database: gunicorn nodes, and holders of a job lock.

A node is `gunicorn -c kmsportal/gunicorn.conf.py` as production starts it, with the test
process's SECRET_KEY and master keyring (the root conftest put them in the environment) and a
DATABASE_URL naming pytest-django's test database, so a node sees what a test committed and
the test sees what a node committed.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# Redis databases the tests own (flushed before and after each test that uses one): 15 for
# the in-process cache tests, 14 for the two-node tests. Production uses database 0.
# KMS_TEST_REDIS_DB_CACHE_TESTS / KMS_TEST_REDIS_DB_NODES move them, so that two checkouts
# can run the PostgreSQL suite side by side without flushing each other's counters.
REDIS_DB_CACHE_TESTS = int(os.environ.get("KMS_TEST_REDIS_DB_CACHE_TESTS", "15"))
REDIS_DB_NODES = int(os.environ.get("KMS_TEST_REDIS_DB_NODES", "14"))
START_TIMEOUT_SECONDS = 90


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def redis_unavailable_reason() -> str | None:
    """Why Redis cannot be used here, or None when it answers PING."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"needs Redis at {REDIS_HOST}:{REDIS_PORT} ({exc}); `.ci/run` starts one"
    finally:
        client.close()
    return None


def postgres_unavailable_reason() -> str | None:
    if connection.vendor != "postgresql":
        return (
            "needs PostgreSQL (DATABASE_URL=postgres://...): separate processes cannot share "
            "the SQLite test database"
        )
    return None


def require(*reasons: str | None) -> None:
    """Skip the test for the first reason given; fail instead when KMS_REQUIRE_SCALEOUT is
    set (`.ci/run` sets it where PostgreSQL and Redis must be there)."""
    for reason in reasons:
        if reason is None:
            continue
        if os.environ.get("KMS_REQUIRE_SCALEOUT"):
            pytest.fail(f"KMS_REQUIRE_SCALEOUT is set but this test {reason}")
        pytest.skip(reason)


def flush_redis(db: int) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_counters(db: int, pattern: str) -> dict[str, int]:
    """The counters in Redis database ``db`` whose key matches ``pattern``, as Redis holds
    them (Django's backend prefixes keys with ":1:")."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        return {key.decode(): int(client.get(key)) for key in client.scan_iter(match=pattern)}
    finally:
        client.close()


def database_url() -> str:
    """The URL of the database this process uses: pytest-django's test database."""
    if connection.vendor != "postgresql":
        raise RuntimeError("only a PostgreSQL test database can be shared with other processes")
    config = connection.settings_dict
    user = quote(str(config.get("USER") or ""), safe="")
    password = quote(str(config.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = config.get("HOST") or "localhost"
    port = config.get("PORT") or 5432
    return f"postgres://{credentials}{host}:{port}/{quote(str(config['NAME']), safe='')}"


def process_environment(**overrides: str) -> dict[str, str]:
    """This process's environment (secrets, data dir) for a child Django process on the same
    database, without proxies (everything is on loopback)."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    environment["NO_PROXY"] = environment["no_proxy"] = "localhost,127.0.0.1"
    environment["DJANGO_SETTINGS_MODULE"] = "kmsportal.settings"
    if connection.vendor == "postgresql":
        environment["DATABASE_URL"] = database_url()
    environment.update(overrides)
    return environment


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def collect_static(static_root: Path) -> None:
    """`collectstatic` as a deployment runs it: nodes with DEBUG=false serve the hashed,
    compressed files through WhiteNoise and refuse to render a page without the manifest."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=PROJECT_ROOT,
        env=process_environment(DEBUG="false", STATIC_ROOT=str(static_root)),
        check=True,
        capture_output=True,
        timeout=300,
    )


@dataclass
class GunicornNode:
    """One node: a gunicorn master and its workers on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: gunicorn's graceful shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        # Generous: a worker still booting (or replaced after --max-requests) answers late
        # on a loaded machine, and a probe given up on leaves its request queued.
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            probe.request("GET", "/healthz")
            return probe.getresponse().status == 200
        finally:
            probe.close()
    except OSError:
        return False


def start_gunicorn_node(
    name: str, *, port: int, environment: dict[str, str], log_dir: Path
) -> GunicornNode:
    """Start `gunicorn -c kmsportal/gunicorn.conf.py` on 127.0.0.1:port; return once its
    /healthz answers (the load balancer's probe), or fail with the end of its log."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = ([str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]) + [
        "-c",
        "kmsportal/gunicorn.conf.py",
    ]
    log = log_dir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**environment, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    node = GunicornNode(name=name, port=port, process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"gunicorn node {name} exited with status {process.returncode}:\n" + node.log_tail()
            )
        if _healthy(port):
            return node
        time.sleep(0.2)
    node.stop()
    pytest.fail(f"gunicorn node {name} did not answer /healthz in time:\n" + node.log_tail())
