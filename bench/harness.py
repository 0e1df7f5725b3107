"""Shared benchmark plumbing: a throw-away database, timing, result rows, a gunicorn server.

Every benchmark module defines ``run(*, quick: bool, database: str) -> list[Row]``.
`bench/run.py` runs each module in a fresh process per database (SQLite file, PostgreSQL
database ``kmsbench_<pid>``) and prints one table. Figures are medians of several runs with
their spread; every row carries a baseline measured in the same process and run, so the
ratio is what to read, not the absolute figure.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The throw-away benchmark users' password (their database is dropped after the run).
BENCH_PASSWORD = "bench password 12345 horse"  # noqa: S105


@dataclass
class Row:
    """One line of the table. ``ratio`` is always ours / baseline, in the row's unit.

    ``target`` is the issue's bar for the ratio, ``"<= 1.5"`` or ``">= 0.8"`` (empty when the
    issue sets none). A missed target is reported, never an error.
    """

    task: str
    ours: float
    ours_spread: float | None
    baseline_name: str
    baseline: float
    baseline_spread: float | None
    unit: str  # a rate ("req/s", "events/s": higher is better), "s" or "MiB" (lower is better)
    database: str = ""
    note: str = ""
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def target_met(self) -> bool | None:
        """Whether the ratio meets ``target``; None without a target."""
        if not self.target:
            return None
        operator, bound = self.target.split()
        if operator == "<=":
            return self.ratio <= float(bound)
        if operator == ">=":
            return self.ratio >= float(bound)
        raise ValueError(f"unknown target {self.target!r}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "target_met": self.target_met}


# --- the database ---------------------------------------------------------------------------


def setup_django(database: str) -> None:
    """Point Django at a fresh database (`sqlite` or `postgres`) and migrate it quietly."""
    sys.path.insert(0, str(ROOT))
    data_dir = tempfile.mkdtemp(prefix="kmsbench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsportal.settings")
    os.environ["DEBUG"] = "false"
    os.environ["SECRET_KEY"] = "bench-" + base64.b64encode(os.urandom(30)).decode()
    os.environ["KMS_DATA_DIR"] = data_dir
    os.environ.setdefault("KMS_MASTER_KEYS", "bench1:" + base64.b64encode(os.urandom(32)).decode())
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    if database == "postgres":
        # One database per benchmark process: runs may overlap (CI, several developers).
        base = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/kmsbench")
        url = f"{base}_{os.getpid()}"
        _recreate_postgres_database(url)
        atexit.register(_drop_postgres_database, url)
        os.environ["DATABASE_URL"] = url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir}/bench.sqlite3"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # Pages render without collectstatic's manifest (as in the tests and bench.settings).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    call_command("migrate", verbosity=0)


def _drop_postgres_database(url: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _recreate_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def analyze() -> None:
    """Refresh PostgreSQL's planner statistics after a bulk fill, as autovacuum would soon
    do on a real server (SQLite keeps none unless told to, and a deployment does not)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


# --- timing ---------------------------------------------------------------------------------


def spread(values: list[float]) -> tuple[float, float]:
    """(median, (max - min) / median) of measurements."""
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median if median else 0.0


def measure(fn: Callable[[], int], *, repeats: int = 5) -> tuple[float, float]:
    """Run `fn` (which returns how many operations it did) `repeats` times.

    Returns (median ops/s, spread as (max-min)/median)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return spread(rates)


def measure_seconds(fn: Callable[[], object], *, repeats: int = 5) -> tuple[float, float]:
    """Median wall time of `fn` in seconds, and spread as (max-min)/median (after one
    untimed warm-up call: first-request costs such as template compilation are not the page)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return spread(times)


# --- signing in -----------------------------------------------------------------------------


def bench_user(*roles: str, prefix: str = "bench") -> Any:
    """A user holding ``roles`` (accounts.roles.Role values), password BENCH_PASSWORD."""
    import uuid

    from accounts import invitations
    from accounts import services as accounts

    created = accounts.user_create(
        actor=None, username=f"{prefix}-{uuid.uuid4().hex[:8]}", roles=list(roles), reason="bench"
    )
    if created.role_request is not None:  # a bench database with two administrators
        created.role_request.delete()
        accounts._roles_add(created.user, list(roles), by="bench")
    return invitations.invitation_accept(token=created.invitation_token, password=BENCH_PASSWORD)


_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = _CSRF_FIELD.search(html)
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match.group(1)


def http_sign_in(base_url: str, user: Any, *, totp_secret: bytes | None = None) -> Any:
    """A ``requests.Session`` signed in to the server at ``base_url`` as ``user`` (password
    BENCH_PASSWORD) through the real sign-in pages; the second-factor step, when the server
    asks for it, is answered with a TOTP code of ``totp_secret``."""
    import requests

    session = requests.Session()
    login = session.get(f"{base_url}/accounts/login/", timeout=30)
    answer = session.post(
        f"{base_url}/accounts/login/",
        data={
            "username": user.username,
            "password": BENCH_PASSWORD,
            "csrfmiddlewaretoken": csrf_token(login.text),
        },
        allow_redirects=False,
        timeout=30,
    )
    location = answer.headers.get("Location", "")
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in as {user.username} answered {answer.status_code}")
    if "/mfa/" in location:
        if totp_secret is None:
            raise RuntimeError(f"sign-in as {user.username} asks for a second factor")
        from tests.factories import totp_code

        verify_url = location if location.startswith("http") else base_url + location
        page = session.get(verify_url, timeout=30)
        answer = session.post(
            verify_url,
            data={"code": totp_code(totp_secret), "csrfmiddlewaretoken": csrf_token(page.text)},
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302 or "/mfa/" in answer.headers.get("Location", ""):
            raise RuntimeError(f"the second factor of {user.username} was refused")
    return session


def http_sign_in_with_mfa(base_url: str, user: Any) -> Any:
    """:func:`http_sign_in` for a role that must use MFA (administrator, key custodian, CA
    operator): enrols an authenticator for ``user`` first with the test suite's helper."""
    from tests.factories import mfa_enroll

    return http_sign_in(base_url, user, totp_secret=mfa_enroll(user))


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_start(
    port: int, *, workers: int = 2, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """gunicorn with the project's configuration (``kmsportal/gunicorn.conf.py``) and
    ``bench.settings`` (the portal plus the bench-only baseline views), on loopback, against
    this process's database. Returns once ``/healthz`` answers."""
    from django.db import connections

    connections.close_all()  # nothing held open while the server runs
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "kmsportal/gunicorn.conf.py"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                if len(worker_pids(process.pid)) == workers:
                    return process
        except OSError:
            pass
        time.sleep(0.2)
    gunicorn_stop(process)
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def gunicorn_stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rates_get(
    port: int, targets: dict[str, tuple[str, dict[str, str]]], *, seconds: float, repeats: int
) -> dict[str, tuple[float, float]]:
    """Requests per second for GET on each of ``targets`` (name: (path, headers)), from a
    second process (bench/load.py, 4 threads): the targets take turns in each of
    ``repeats`` rounds, each round bounded by ``seconds`` and a request budget. Returns
    (median, spread) per name."""
    payload = [
        {"name": name, "path": path, "headers": headers}
        for name, (path, headers) in targets.items()
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "get", str(port), json.dumps(payload),
         "--seconds", str(seconds), "--repeats", str(repeats), "--threads", "4",
         # far above what 2 cores serve: time is the usual bound
         "--max-requests", str(int(seconds * 20_000))],
        capture_output=True, text=True, check=False,
        timeout=len(targets) * (repeats * seconds + 1) + 120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the load driver failed: {done.stderr[-2000:]}")
    return {name: spread(rates) for name, rates in json.loads(done.stdout).items()}


# --- memory -----------------------------------------------------------------------------------


def worker_pids(master_pid: int) -> list[int]:
    """The pids of gunicorn's workers: the master's child processes."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == master_pid:
            children.append(int(entry.name))
    return sorted(children)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS again from its current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
