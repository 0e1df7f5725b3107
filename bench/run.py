"""`make bench`: run every benchmark on SQLite and PostgreSQL and print one table.

    python bench/run.py [--quick] [--only audit] [--database sqlite|postgres|all]

Each benchmark module runs in its own process per database (a fresh database each time; the
keyring module, which touches no database, runs once). The table is printed and written with
the machine, versions, date, mode and total time to bench/results.md (a full run of every
module, the figures the README quotes) or bench/results-partial.md (a quick run or a part:
git-ignored, so CI's quick run never overwrites the committed figures).

Exit status: 1 when a benchmark crashed (its rows are missing and the table says which);
never because a figure missed its target: targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    "keyring",
    "audit",
    "vault",
    "pki",
    "revocation",
    "distribution",
    "key_backends",
    "operations",
]
# Modules that measure no database work: run once, on the first database.
DATABASE_INDEPENDENT = {"keyring"}
SYMBOLS = {"<=": "≤", ">=": "≥"}


def _child(module: str, database: str, quick: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.harness import setup_django

    setup_django(database)
    bench = __import__(f"bench.bench_{module}", fromlist=["run"])
    rows = bench.run(quick=quick, database=database)
    if module in DATABASE_INDEPENDENT:
        for row in rows:
            row.database = "any"
    print("BENCH-RESULT " + json.dumps([row.as_dict() for row in rows]))


def _run_child(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run one benchmark process; on timeout, end it with everything it started (its
    gunicorn) and drop its PostgreSQL database."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, gunicorn included
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_child(process)
        stdout, stderr = process.communicate()
        return -1, stdout, stderr + f"\ntimed out after {timeout:.0f} s"
    except BaseException:  # Ctrl-C: its own process group did not get the signal
        _end_child(process)
        raise
    return process.returncode, stdout, stderr


def _end_child(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _drop_child_database(process.pid)


def _drop_child_database(pid: int) -> None:
    """The database a killed child could not drop itself (see harness.setup_django)."""
    try:
        import psycopg

        base = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/kmsbench")
        admin, name = base.rsplit("/", 1)
        with psycopg.connect(admin + "/postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_{pid}" WITH (FORCE)')
    except Exception as exc:  # the run goes on; say what is left behind
        print(f"could not drop the database of benchmark process {pid}: {exc}")


def _postgres_available() -> bool:
    try:
        done = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _postgres_version() -> str:
    try:
        import psycopg

        base = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/kmsbench")
        with psycopg.connect(base.rsplit("/", 1)[0] + "/postgres", connect_timeout=10) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    except Exception as exc:  # the preface says so instead of failing
        return f"unknown ({type(exc).__name__})"


def _format(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def _spread(value: float | None) -> str:
    return "" if value is None else f" (±{value:.0%})"


def _target(row: dict) -> str:
    if not row["target"]:
        return ""
    operator, bound = row["target"].split()
    verdict = "met" if row["target_met"] else "**MISSED**"
    return f"{SYMBOLS[operator]} {bound}: {verdict}"


def _table(rows: list[dict]) -> str:
    """The markdown table, then the rows' notes as numbered footnotes."""
    notes: dict[str, int] = {}
    lines = [
        "| task | database | ours | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = ""
        if row["note"]:
            mark = f" [{notes.setdefault(row['note'], len(notes) + 1)}]"
        lines.append(
            f"| {row['task']}{mark} | {row['database']} | "
            f"{_format(row['ours'], row['unit'])}{_spread(row['ours_spread'])} | "
            f"{row['baseline_name']} | "
            f"{_format(row['baseline'], row['unit'])}{_spread(row['baseline_spread'])} | "
            f"{row['ratio']:.3f} | {_target(row)} |"
        )
    if notes:
        lines.append("")
        lines += [f"[{number}] {note}  " for note, number in notes.items()]
    return "\n".join(lines)


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip() + ", "
                break
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {memory_kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory = ""
    return f"{model}{platform.machine()}, {os.cpu_count()} cores{memory}, {platform.platform()}"


def _versions(databases: list[str]) -> str:
    import cryptography
    import django
    from cryptography.hazmat.backends.openssl.backend import backend

    parts = [
        f"Python {platform.python_version()}",
        f"Django {django.__version__}",
        f"cryptography {cryptography.__version__} ({backend.openssl_version_text()})",
        f"gunicorn {metadata.version('gunicorn')}",
        f"psycopg {metadata.version('psycopg')}",
        f"SQLite {sqlite3.sqlite_version}",
    ]
    if "postgres" in databases:
        parts.append(f"PostgreSQL {_postgres_version()}")
    return ", ".join(parts)


def _preface(
    *,
    quick: bool,
    seconds: float,
    databases: list[str],
    modules: list[str],
    failures: list[str],
    load: tuple[float, float],
) -> str:
    mode = "quick (`make bench QUICK=1`: smaller sizes)" if quick else "full (`make bench`)"
    if modules != MODULES:
        mode += f", only {', '.join(modules)}"
    if databases != ["sqlite", "postgres"]:
        mode += f", only on {', '.join(databases)}"
    text = (
        "# Benchmark results\n\n"
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- Mode: {mode}; total time {seconds:.0f} s\n"
        f"- Machine: {_machine()}; load average {load[0]:.1f} at the start, {load[1]:.1f} "
        "at the end\n"
        f"- Versions: {_versions(databases)}\n\n"
        "Every row is one task measured twice in the same run: ours, and a baseline (bare "
        "`cryptography`, hashlib, a trivial view in the same server, the same page at 10 "
        "rows, an idle worker). **Ratio = ours / baseline, "
        "in the row's unit**: for rates (req/s, ops/s, events/s) higher is better, so a "
        'target reads "≥"; for seconds and MiB lower is better, so a target reads "≤". '
        "Figures are medians of several runs; ± is the spread, (max - min) / median. Targets "
        "come from issue 9 and are reported, not asserted (a missed one does not fail the "
        "run). The machine's load shows in the spreads: compare ratios, not absolute "
        "figures, and only between runs on the same machine.\n\n"
    )
    if failures:
        text += (
            "**Benchmarks that crashed (their rows are missing):** " + ", ".join(failures) + "\n\n"
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append", choices=MODULES)
    parser.add_argument("--database", default="all", choices=["sqlite", "postgres", "all"])
    parser.add_argument("--child", nargs=2, metavar=("MODULE", "DATABASE"))
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.quick)
        return 0

    databases = ["sqlite", "postgres"] if args.database == "all" else [args.database]
    if "postgres" in databases and not _postgres_available():
        print("PostgreSQL is not answering on 127.0.0.1:5432; skipping it.")
        databases.remove("postgres")
    rows: list[dict] = []
    failures: list[str] = []
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    # A hung benchmark must not hang CI: generous bounds, far above a normal run.
    timeout = 600 if args.quick else 1800
    for module in args.only or MODULES:
        for database in databases[:1] if module in DATABASE_INDEPENDENT else databases:
            command = [sys.executable, str(Path(__file__)), "--child", module, database]
            if args.quick:
                command.append("--quick")
            began = time.monotonic()
            returncode, stdout, stderr = _run_child(command, timeout)
            lines = [x for x in stdout.splitlines() if x.startswith("BENCH-RESULT ")]
            took = time.monotonic() - began
            if returncode != 0 or not lines:
                print(stdout[-2000:], stderr[-4000:], sep="\n")
                print(f"  FAILED: {module} on {database} ({took:.0f} s)", flush=True)
                failures.append(f"{module} on {database}")
                continue
            for index, row in enumerate(json.loads(lines[-1][len("BENCH-RESULT ") :])):
                # The same task on both databases side by side, in the module's order.
                row["order"] = (MODULES.index(module), index, databases.index(database))
                rows.append(row)
            print(f"  done: {module} on {database} ({took:.0f} s)", flush=True)

    seconds = time.monotonic() - started
    rows.sort(key=lambda row: row["order"])
    table = _table(rows)
    preface = _preface(
        quick=args.quick,
        seconds=seconds,
        databases=databases,
        modules=args.only or MODULES,
        failures=failures,
        load=(load_before, os.getloadavg()[0]),
    )
    print("\n" + table)
    missed = sum(1 for row in rows if row["target_met"] is False)
    met = sum(1 for row in rows if row["target_met"] is True)
    print(f"\nTargets: {met} met, {missed} missed (reported, not asserted).")
    print(f"Total time: {seconds:.0f} s ({'quick' if args.quick else 'full'} run).")
    complete = not args.quick and not args.only and args.database == "all"
    results = ROOT / "bench" / ("results.md" if complete else "results-partial.md")
    results.write_text(preface + table + "\n")
    print(f"Written to {results.relative_to(ROOT)}.")
    if failures:
        print("Crashed: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
