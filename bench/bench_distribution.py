"""Key distribution (issue 7, "Measure"): key fetches per second through gunicorn against the
raw cost of the same cryptography.

1. Key fetches over HTTP: gunicorn (2 sync workers, ``kmsportal/gunicorn.conf.py``) on
   loopback, driven by ``kmsclient.KMSClient`` (revocation checking on: the CRLs are
   downloaded once per client process and cached) from a second process, sequentially and
   from 2 threads (one client each). The rate limit is off for the run
   (``KMS_CLIENT_RATE_LIMIT=0``). Baseline: the same cryptography in one process, no HTTP, no
   database: ``build_fetch_request`` (client ephemeral X25519, ECDSA P-256 signature),
   ``verify_fetch_request`` (verification), ``build_fetch_response`` (server ephemeral DH,
   HKDF, AES-GCM, ECDSA P-256 signature with the KMS's own server key) and
   ``open_fetch_response`` (verification, DH, HKDF, decryption). The client's certificate
   chain validation and CRL checks are not in the baseline (they are in the HTTP figure).
2. Server time only: ``vault.distribution.key_fetch`` in-process on pre-built requests (every
   check, the nonce row, the delivery row, the audit event) against the server's share of the
   cryptography (verify the request, build the response), same key, same process.

Identity CAs are RSA-3072 (the product default); client and server keys are EC P-256.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_revocation import _free_port, _start_gunicorn
from bench.harness import ROOT, Row

KEY_NAME = "bench-key"

_DRIVER = r"""
import json, sys, threading, time
from kmsclient.client import KMSClient
url, cert, key, ca, count, repeats, threads = sys.argv[1:8]
count, repeats, threads = int(count), int(repeats), int(threads)
clients = [KMSClient(url, cert, key, ca, check_revocation=True) for _ in range(threads)]
for client in clients:
    client.fetch_key("bench-key")  # warm up: connections, CRL downloads, both workers
def work(client, n):
    for _ in range(n):
        client.fetch_key("bench-key")
rates = []
for _ in range(repeats):
    per_thread = count // threads
    workers = [threading.Thread(target=work, args=(c, per_thread)) for c in clients]
    began = time.perf_counter()
    for w in workers: w.start()
    for w in workers: w.join()
    rates.append(per_thread * threads / (time.perf_counter() - began))
print(json.dumps(rates))
"""


def _spread(rates: list[float]) -> tuple[float, float]:
    median = statistics.median(rates)
    return median, (max(rates) - min(rates)) / median if median else 0.0


def _drive(url: str, files: dict[str, str], count: int, repeats: int, threads: int):  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER,
         url, files["cert"], files["key"], files["ca"], str(count), str(repeats), str(threads)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"key fetch driver failed: {done.stderr[-3000:]}")
    return _spread(json.loads(done.stdout.strip().splitlines()[-1]))


def _identity(directory: Path):  # type: ignore[no-untyped-def]
    """Enroll a client in-process (its own EC P-256 key and CSR) and write its files."""
    from cryptography.hazmat.primitives import serialization

    from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
    from vault.distribution import client_create, client_enroll_response

    client, token = client_create(actor=None, name="bench-client")
    private_key = generate_private_key("ecp256")
    csr = build_csr(private_key=private_key, subject=parse_subject("CN=bench-client"))
    answer = client_enroll_response(token=token, csr_pem=csr.decode())
    files = {"cert": directory / "client.crt", "key": directory / "client.key"}
    files["ca"] = directory / "root.crt"
    files["cert"].write_text(answer["certificate"])
    files["ca"].write_text(answer["root_ca_certificate"])
    files["key"].write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client.refresh_from_db()
    return client, private_key, answer["certificate"], {k: str(v) for k, v in files.items()}


def _raw_exchanges(count: int, cert_pem: str, client_key, server_key, chain, leaf_key):  # type: ignore[no-untyped-def]
    """`count` complete exchanges, every step of the cryptography, no HTTP, no database."""
    from kmsportal.crypto import protocol

    material = os.urandom(32)

    def run() -> int:
        for _ in range(count):
            body, state = protocol.build_fetch_request(
                key_name=KEY_NAME,
                version=None,
                client_certificate_pem=cert_pem,
                client_private_key=client_key,
            )
            request, signature = protocol.verify_fetch_request(
                body, client_key.public_key(), now=datetime.now(UTC)
            )
            response = protocol.build_fetch_response(
                request=request,
                request_signature=signature,
                key_name=KEY_NAME,
                version=1,
                client_name="bench-client",
                key_material=material,
                server_private_key=server_key,
                server_chain_pems=chain,
            )
            protocol.open_fetch_response(
                state=state, response=response, trusted_server_public_key=leaf_key
            )
        return count

    return run


def _timed_on_prebuilt(count: int, repeats: int, cert_pem: str, client_key, handle):  # type: ignore[no-untyped-def]
    """Rates of `handle(body)` over `count` fresh requests built (untimed) before each repeat."""
    from kmsportal.crypto import protocol

    rates = []
    for _ in range(repeats):
        bodies = [
            protocol.build_fetch_request(
                key_name=KEY_NAME,
                version=None,
                client_certificate_pem=cert_pem,
                client_private_key=client_key,
            )[0]
            for _ in range(count)
        ]
        began = time.perf_counter()
        for body in bodies:
            handle(body)
        rates.append(count / (time.perf_counter() - began))
    return _spread(rates)


def run(*, quick: bool, database: str) -> list[Row]:
    from django.conf import settings
    from django.db import connections

    from kmsportal.crypto import protocol
    from vault.distribution import (
        _server_credential,
        distribution_bootstrap,
        grant_create,
        key_fetch,
    )
    from vault.services import symmetric_key_create

    count = 100 if quick else 1000
    repeats = 3
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Certificates name their CRL under KMS_PUBLIC_URL: point it at the server we start.
    settings.KMS_PUBLIC_URL = url
    settings.KMS_CLIENT_RATE_LIMIT = 0
    os.environ["KMS_PUBLIC_URL"] = url
    os.environ["KMS_CLIENT_RATE_LIMIT"] = "0"

    distribution_bootstrap()
    key = symmetric_key_create(actor=None, name=KEY_NAME)
    directory = Path(tempfile.mkdtemp(prefix="kmsbench-client-"))
    client, client_key, cert_pem, files = _identity(directory)
    grant_create(actor=None, client=client, key=key)
    server_key, chain = _server_credential()
    leaf_key = protocol.server_leaf_certificate({"server_certificate_chain": chain}).public_key()

    raw = _raw_exchanges(count, cert_pem, client_key, server_key, chain, leaf_key)
    raw()  # warm up
    raw_rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        raw_rates.append(raw() / (time.perf_counter() - began))
    base, base_spread = _spread(raw_rates)

    connections.close_all()  # nothing held open while the server runs
    server = _start_gunicorn(port)
    try:
        sequential, sequential_spread = _drive(url, files, count, repeats, 1)
        parallel, parallel_spread = _drive(url, files, count, repeats, 2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # Server time only, in this process.
    key_fetch(body=protocol.build_fetch_request(
        key_name=KEY_NAME, version=None, client_certificate_pem=cert_pem,
        client_private_key=client_key,
    )[0])  # fmt: skip
    material = os.urandom(32)
    public_key = client_key.public_key()

    def server_crypto(body: dict) -> None:
        request, signature = protocol.verify_fetch_request(body, public_key, now=datetime.now(UTC))
        protocol.build_fetch_response(
            request=request,
            request_signature=signature,
            key_name=KEY_NAME,
            version=1,
            client_name="bench-client",
            key_material=material,
            server_private_key=server_key,
            server_chain_pems=chain,
        )

    server_base, server_base_spread = _timed_on_prebuilt(
        count, repeats, cert_pem, client_key, server_crypto
    )
    service, service_spread = _timed_on_prebuilt(
        count, repeats, cert_pem, client_key, lambda body: key_fetch(body=body)
    )

    baseline_name = (
        "same cryptography in one process (client request + signature, server verify, "
        "DH + HKDF + AES-GCM + signature, client verify + DH + HKDF + decrypt)"
    )
    return [
        Row(
            "key fetch over HTTP (gunicorn, 2 workers, kmsclient, sequential)",
            sequential,
            sequential_spread,
            baseline_name,
            base,
            base_spread,
            "ops/s",
            database,
            note="client validates the server chain and CRLs (cached); rate limit off",
        ),
        Row(
            "key fetch over HTTP (gunicorn, 2 workers, kmsclient, 2 client threads)",
            parallel,
            parallel_spread,
            baseline_name,
            base,
            base_spread,
            "ops/s",
            database,
        ),
        Row(
            "key fetch, server time only (key_fetch service in-process: checks, nonce, "
            "delivery, audit)",
            service,
            service_spread,
            "server's share of the cryptography (verify request, DH + HKDF + AES-GCM + sign)",
            server_base,
            server_base_spread,
            "ops/s",
            database,
        ),
    ]
