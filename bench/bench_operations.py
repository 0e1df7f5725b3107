"""Operations API: encrypt over HTTP against the same server's protected no-op, and a batch of
1,000 encrypts against 1,000 bare AES-GCM encryptions.

1. ``encrypt`` of 1 KiB over HTTP: gunicorn (2 sync workers, ``bench.settings``) on loopback,
   driven by ``kmsclient.KMSClient`` from a second process (this file run as a script) with
   4 client threads (one session each). Baseline: the same server's trivial authenticated
   endpoint, ``/api/v1/session/ping`` (session lookup, counter update, the envelope opened
   and the answer sealed; no key operation, no audit event). Target ≥ 0.5x. The absolute
   ops/s is printed beside Vault transit's published ~1.8k ops/s per operation type
   (vault-benchmark's documented example, four operation types running together).
2. A batch of 1,000 encrypts (1 KiB each) in one HTTP request in the binary frame (client sealing, server
   opening, checks, 1,000 encryptions, one audit event, sealed answer, client opening)
   against 1,000 bare AES-GCM encryptions of 1 KiB with one ``AESGCM`` object in one
   process. Target ≥ 0.3x. Also the same batch through the service in this process (no HTTP,
   no session) to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import ROOT, Row, free_port, gunicorn_start, gunicorn_stop, spread

KEY_NAME = "bench-ops"
PAYLOAD = os.urandom(1024)
BATCH = 1000
VAULT_TRANSIT = "Vault transit ~1.8k ops/s per operation type (vault-benchmark example)"


def _identity(directory: Path) -> tuple[object, dict[str, str]]:
    """A client enrolled as the key fetch benchmark does, and the server pins it learns."""
    from bench.bench_distribution import _identity as enrolled
    from vault.server_identity import server_identity_pin

    client, _key, _pem, files = enrolled(directory)
    pin = server_identity_pin()
    assert pin is not None
    return client, {**files, "spki": pin.ca_spki_sha256, "deployment": pin.deployment}


def _client(url: str, files: dict[str, str]):  # type: ignore[no-untyped-def]
    from kmsclient.client import KMSClient

    return KMSClient(
        url,
        files["cert"],
        files["key"],
        files["ca"],
        server_ca_spki_sha256=files["spki"],
        deployment=files["deployment"],
    )


# --- the driver (a second process) ----------------------------------------------------------


def _drive(args: argparse.Namespace) -> dict[str, list[float]]:
    files = json.loads(args.files)
    client = _client(args.url, files)
    items = [{"plaintext": PAYLOAD} for _ in range(BATCH)]  # bytes: the binary frame's fields
    calls = {
        "encrypt": lambda: client.encrypt(KEY_NAME, PAYLOAD),
        "ping": client.ping,
    }
    results: dict[str, list[float]] = {}
    for name, call in calls.items():
        rates = []
        for _ in range(args.repeats):
            done = [0] * args.threads
            deadline = time.perf_counter() + args.seconds

            def work(index: int, call=call, done=done, deadline=deadline) -> None:
                call()  # opens this thread's session (not timed after the first repeat)
                while time.perf_counter() < deadline:
                    call()
                    done[index] += 1

            threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rates.append(sum(done) / (time.perf_counter() - began))
        results[name] = rates
    client.operate("encrypt", KEY_NAME, items)  # warm up
    batch = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        answer = client.operate("encrypt", KEY_NAME, items)
        batch.append(BATCH / (time.perf_counter() - began))
        assert len(answer) == BATCH and "ciphertext" in answer[0]
    results["batch"] = batch
    client.close()
    return results


# --- the benchmark ------------------------------------------------------------------------------


def _bare_aes(repeats: int) -> tuple[float, float]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    rates = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        for _ in range(BATCH):
            aead.encrypt(os.urandom(12), PAYLOAD, None)
        rates.append(BATCH / (time.perf_counter() - began))
    return spread(rates[1:])


def run(*, quick: bool, database: str) -> list[Row]:
    from django.conf import settings

    from vault.models import Grant
    from vault.operations import key_operation_perform
    from vault.server_identity import distribution_bootstrap
    from vault.services import symmetric_key_create

    repeats = 3
    seconds = 3.0 if quick else 10.0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings.KMS_PUBLIC_URL = url
    settings.KMS_CLIENT_RATE_LIMIT = 0
    os.environ["KMS_PUBLIC_URL"] = url
    os.environ["KMS_CLIENT_RATE_LIMIT"] = "0"

    distribution_bootstrap()
    key = symmetric_key_create(actor=None, name=KEY_NAME)
    client, files = _identity(Path(tempfile.mkdtemp(prefix="kmsbench-ops-")))
    Grant.objects.create(
        client=client, key=key, operations="encrypt,decrypt", created_by_name="bench"
    )

    bare, bare_spread = _bare_aes(repeats)
    # The items as the binary frame hands them to the service: plaintexts as bytes.
    items = [{"plaintext": PAYLOAD} for _ in range(BATCH)]
    key_operation_perform(client=client, operation="encrypt", key_name=KEY_NAME, items=items)
    service_rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        key_operation_perform(client=client, operation="encrypt", key_name=KEY_NAME, items=items)
        service_rates.append(BATCH / (time.perf_counter() - began))
    service, service_spread = spread(service_rates)

    server = gunicorn_start(port)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_operations", url, json.dumps(files),
             "--threads", "4", "--seconds", str(seconds), "--repeats", str(repeats)],
            capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
        )  # fmt: skip
    finally:
        gunicorn_stop(server)
    if done.returncode != 0:
        raise RuntimeError(f"operations driver failed: {done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    encrypt, encrypt_spread = spread(measured["encrypt"])
    ping, ping_spread = spread(measured["ping"])
    batch, batch_spread = spread(measured["batch"])
    return [
        Row(
            "encrypt 1 KiB over HTTP (gunicorn 2 workers, kmsclient, 4 threads, sealed session)",
            encrypt,
            encrypt_spread,
            "/api/v1/session/ping on the same server (session lookup, counter, envelope)",
            ping,
            ping_spread,
            "ops/s",
            database,
            note=f"absolute: {encrypt:.0f} encrypt ops/s here vs {VAULT_TRANSIT}",
            target=">= 0.5",
        ),
        Row(
            "batch of 1,000 encrypts (1 KiB) in one HTTP request, items/s",
            batch,
            batch_spread,
            "1,000 bare AES-256-GCM encryptions of 1 KiB in one process",
            bare,
            bare_spread,
            "ops/s",
            database,
            note="kmsclient to server and back: binary frame sealed and opened on both sides, "
            "one audit event",
            target=">= 0.3",
        ),
        Row(
            "batch of 1,000 encrypts through the service in-process (no HTTP, no session)",
            service,
            service_spread,
            "1,000 bare AES-256-GCM encryptions of 1 KiB in one process",
            bare,
            bare_spread,
            "ops/s",
            database,
            note="items as bytes (as the binary frame gives them): checks, tokens, one audit event",
        ),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("files")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    print(json.dumps(_drive(parser.parse_args())))
