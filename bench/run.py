"""`make bench`: run every benchmark on SQLite and PostgreSQL and print one table.

    python bench/run.py [--quick] [--only audit] [--database sqlite|postgres|all]

Each benchmark module runs in its own process per database (a fresh database each time).
The table is printed and written to bench/results.md with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["audit", "vault", "pki", "revocation", "distribution"]


def _child(module: str, database: str, quick: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.harness import setup_django

    setup_django(database)
    bench = __import__(f"bench.bench_{module}", fromlist=["run"])
    rows = bench.run(quick=quick, database=database)
    print("BENCH-RESULT " + json.dumps([row.as_dict() for row in rows]))


def _postgres_available() -> bool:
    return (
        subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False
        ).returncode
        == 0
    )


def _format(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


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
    started = time.time()
    for module in args.only or MODULES:
        for database in databases:
            command = [sys.executable, str(Path(__file__)), "--child", module, database]
            if args.quick:
                command.append("--quick")
            result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
            lines = [x for x in result.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
            if result.returncode != 0 or not lines:
                print(result.stdout[-2000:], result.stderr[-4000:], sep="\n")
                print(f"benchmark {module} on {database} failed")
                return 1
            rows.extend(json.loads(lines[-1][len("BENCH-RESULT ") :]))
            print(f"  done: {module} on {database}", flush=True)

    header = (
        "| task | database | ours | baseline | baseline value | ratio |\n|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['database']} | {_format(row['ours'])} {row['unit']} "
            f"(±{row['ours_spread']:.0%}) | {row['baseline_name']} | "
            f"{_format(row['baseline'])} {row['unit']} (±{row['baseline_spread']:.0%}) | "
            f"{row['ratio']:.3f} |"
        )
    import cryptography
    import django

    table = "\n".join(lines)
    preface = (
        f"# Benchmark results\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{'quick' if args.quick else 'full'} run, {time.time() - started:.0f} s. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {platform.python_version()}, Django {django.__version__}, "
        f"cryptography {cryptography.__version__}.\n\n"
        "Ratio = ours / baseline, both measured in the same process and run. "
        "Figures are medians; ± is the spread (max-min)/median.\n\n"
    )
    print("\n" + table)
    (ROOT / "bench" / "results.md").write_text(preface + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
