"""Shared benchmark plumbing: a throw-away database, timing, and result rows.

Every benchmark module defines `run(quick: bool) -> list[Row]`. `bench/run.py` runs each module
in a fresh process per database (SQLite file, PostgreSQL database `kmsbench`) and prints one
table. Figures are medians of several runs with their spread; every row carries a baseline
measured in the same process, so the ratio is what to read, not the absolute figure.
"""

from __future__ import annotations

import atexit
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    task: str
    ours: float
    ours_spread: float
    baseline_name: str
    baseline: float
    baseline_spread: float
    unit: str  # "ops/s" (higher is better) or "s" (lower is better)
    database: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        """How we compare with the baseline: >1 means better for ops/s, worse for seconds."""
        return self.ours / self.baseline if self.baseline else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


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

    # Pages render without collectstatic's manifest (as in the tests).
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


def measure(fn: Callable[[], int], *, repeats: int = 5) -> tuple[float, float]:
    """Run `fn` (which returns how many operations it did) `repeats` times.

    Returns (median ops/s, spread as (max-min)/median)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    median = statistics.median(rates)
    return median, (max(rates) - min(rates)) / median if median else 0.0


def measure_seconds(fn: Callable[[], object], *, repeats: int = 5) -> tuple[float, float]:
    """Median wall time of `fn` in seconds, and spread as (max-min)/median (after one
    untimed warm-up call: first-request costs such as template compilation are not the page)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, (max(times) - min(times)) / median if median else 0.0
