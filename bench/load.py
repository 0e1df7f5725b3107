"""The load driver: a second process that sends requests to the benchmark's gunicorn.

    python bench/load.py get PORT '[{"name": "crl", "path": "/pki/crl/x.crl", "headers": {}}]' \
        --seconds 2 --repeats 3 --threads 4 --max-requests 40000
    python bench/load.py fetch URL CERT KEY CA --count 100 --repeats 3 --threads 1 \
        --max-seconds 20

Every run is bounded twice: by a number of requests and by time, whichever comes first.
Prints one JSON line. No Django here: this is what a relying party or a client service runs.

``get``: for each target in turn, ``--repeats`` rounds: threads each keep one ``http.client``
connection (kept alive when the server allows it; gunicorn's sync workers close after every
response, so each request then connects anew) and fetch the path until the deadline or the
round's request budget is spent; prints the rates per target name. Any status other than
200 or 304 stops the driver with an error.

``fetch``: one ``kmsclient.KMSClient`` per thread (revocation checks on, CRLs cached after
the warm-up fetch), ``--repeats`` rounds of ``--count`` key fetches shared by the threads;
prints the rate of each round.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path


def _get_once(
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    seconds: float,
    max_requests: int,
    threads: int,
) -> float:
    """Requests per second for one bounded run of ``threads`` connections on ``path``."""
    counts = [0] * threads
    failures: list[int] = []
    budget = threading.Semaphore(max_requests)
    gate = threading.Barrier(threads + 1)
    deadline = 0.0

    def work(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        gate.wait()
        while time.perf_counter() < deadline and not failures:
            if not budget.acquire(blocking=False):
                break
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status not in (200, 304):
                failures.append(response.status)
                break
            counts[index] += 1
        connection.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.perf_counter() + seconds
    gate.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    if failures:
        raise SystemExit(f"GET {path} answered {failures[0]}")
    return sum(counts) / (time.perf_counter() - began)


def _get(args: argparse.Namespace) -> dict[str, list[float]]:
    """Rates per target; the targets take turns in every round, so a change in the
    machine's load falls on all of them alike."""
    targets = json.loads(args.targets)
    bounds = {"max_requests": args.max_requests, "threads": args.threads}
    for target in targets:  # warm up every worker on every path
        _get_once(args.port, target["path"], target["headers"], seconds=0.3, **bounds)
    rates: dict[str, list[float]] = {target["name"]: [] for target in targets}
    for _ in range(args.repeats):
        for target in targets:
            rates[target["name"]].append(
                _get_once(
                    args.port, target["path"], target["headers"], seconds=args.seconds, **bounds
                )
            )
    return rates


def _fetch_until(
    client: object, key_name: str, count: int, deadline: float, done: list[int], index: int
) -> None:
    while done[index] < count and time.perf_counter() < deadline:
        client.fetch_key(key_name)  # type: ignore[attr-defined]
        done[index] += 1


def _fetch(args: argparse.Namespace) -> list[float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from kmsclient.client import KMSClient

    clients = [
        KMSClient(
            args.url,
            args.cert,
            args.key,
            args.ca,
            server_ca_spki_sha256=args.server_ca_spki,
            deployment=args.deployment,
        )
        for _ in range(args.threads)
    ]
    for client in clients:
        client.fetch_key(args.key_name)  # warm up: connections, both workers
    per_thread = max(1, args.count // args.threads)
    rates = []
    for _ in range(args.repeats):
        done = [0] * args.threads
        deadline = time.perf_counter() + args.max_seconds
        workers = [
            threading.Thread(
                target=_fetch_until, args=(client, args.key_name, per_thread, deadline, done, i)
            )
            for i, client in enumerate(clients)
        ]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates.append(sum(done) / (time.perf_counter() - began))
    for client in clients:
        client.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("get")
    get.add_argument("port", type=int)
    get.add_argument("targets", help='JSON: [{"name": ..., "path": ..., "headers": {...}}]')
    get.add_argument("--seconds", type=float, required=True)
    get.add_argument("--repeats", type=int, default=3)
    get.add_argument("--threads", type=int, default=4)
    get.add_argument("--max-requests", type=int, default=100_000)
    fetch = commands.add_parser("fetch")
    fetch.add_argument("url")
    fetch.add_argument("cert")
    fetch.add_argument("key")
    fetch.add_argument("ca")
    fetch.add_argument("--server-ca-spki", required=True, help="the pinned server identity")
    fetch.add_argument("--deployment", required=True)
    fetch.add_argument("--key-name", default="bench-key")
    fetch.add_argument("--count", type=int, required=True)
    fetch.add_argument("--repeats", type=int, default=3)
    fetch.add_argument("--threads", type=int, default=1)
    fetch.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args()
    result = _get(args) if args.command == "get" else _fetch(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
