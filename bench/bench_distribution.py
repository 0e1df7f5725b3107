"""Key distribution: the full key fetch exchange, over HTTP and in one process, against the
raw cost of the same cryptography.

1. Over HTTP: gunicorn (2 sync workers, ``kmsportal/gunicorn.conf.py``, ``bench.settings``) on
   loopback, driven by ``kmsclient.KMSClient`` (server identity pinned; the server's
   revocation status comes stapled in each answer, no CRL is downloaded) from a second process (``bench/load.py
   fetch``), sequentially and from 2 threads (one client each), bounded in requests and
   time. The rate limit is off for the run (``KMS_CLIENT_RATE_LIMIT=0``).
2. In one process, no HTTP: the same ``KMSClient`` code (request, signature, server chain
   validation, stapled-status check, DH, HKDF, decryption) with a session that hands the
   JSON body straight to ``vault.exchange.key_fetch`` (every check, the nonce row, the
   delivery row, the audit event) and refuses any GET (no download per fetch): the whole
   exchange but the socket, HTTP and Django's request handling. Target: at least 0.5x the
   raw cryptography.
3. Server time only: ``key_fetch`` in-process on pre-built requests, against the server's
   share of the cryptography (verify the request, build the response).

Baseline for 1 and 2: the same cryptography in one process, no HTTP, no database:
``build_fetch_request`` (client ephemeral X25519, ECDSA P-256 signature),
``verify_fetch_request``, ``build_fetch_response`` (server ephemeral DH, HKDF, AES-GCM, ECDSA
P-256 signature with the KMS's own server key) and ``open_fetch_response`` (verification, DH,
HKDF, decryption). The client's certificate chain validation and status check are not in it.

Also the peak RSS of a gunicorn worker after serving the fetches. Identity CAs are RSA-3072
(the product default); client and server keys are EC P-256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    ROOT,
    Row,
    free_port,
    gunicorn_start,
    gunicorn_stop,
    peak_rss_mib,
    spread,
    worker_pids,
)

KEY_NAME = "bench-key"


class InProcessSession(requests.Session):
    """What ``KMSClient`` sends, answered by the server's own code in this process.

    POST (the fetch): the JSON body goes to ``vault.exchange.key_fetch`` and its answer
    comes back as JSON text, as the API view does minus HTTP. A GET (a CRL download) would
    be a regression: the server's status is stapled in the answer.
    """

    def post(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        from vault.exchange import key_fetch

        return _response(url, json.dumps(key_fetch(body=json.loads(data))).encode())

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        raise AssertionError(f"a key fetch must download nothing, not {url}")


def _response(url: str, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.url = url
    response._content = body
    response._content_consumed = True  # iter_content() then slices the body
    return response


def _drive(
    url: str, files: dict[str, str], *, count: int, repeats: int, threads: int, max_seconds: float
) -> tuple[float, float]:
    command = [sys.executable, str(ROOT / "bench" / "load.py"), "fetch", url,
               files["cert"], files["key"], files["ca"], "--key-name", KEY_NAME,
               "--server-ca-spki", files["server_ca_spki"], "--deployment", files["deployment"],
               "--count", str(count), "--repeats", str(repeats), "--threads", str(threads),
               "--max-seconds", str(max_seconds)]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=repeats * max_seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"key fetch driver failed: {done.stderr[-3000:]}")
    return spread(json.loads(done.stdout.strip().splitlines()[-1]))


def _identity(directory: Path):  # type: ignore[no-untyped-def]
    """Enroll a client in-process (its own EC P-256 key and CSR) and write its files."""
    from cryptography.hazmat.primitives import serialization

    from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
    from vault.clients import client_create, client_enroll_response

    client, token = client_create(actor=None, name="bench-client")
    private_key = generate_private_key("ecp256")
    csr = build_csr(private_key=private_key, subject=parse_subject("CN=bench-client"))
    from kmsportal.crypto import protocol

    body, _state = protocol.build_enroll_request(token=token, csr_pem=csr.decode())
    answer = client_enroll_response(body=body)
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
    pinned = {
        "server_ca_spki": answer["server_identity"]["ca_spki_sha256"],
        "deployment": answer["server_identity"]["deployment"],
    }
    return (
        client,
        private_key,
        answer["certificate"],
        {
            **{k: str(v) for k, v in files.items()},
            **pinned,
        },
    )


def _staple() -> bytes:
    """The server's stapled status, as the fetch gets it (from the cache, made once)."""
    from vault.models import ServerIdentity
    from vault.server_identity import server_status_staple

    return server_status_staple(
        ServerIdentity.objects.values_list("certificate_id", flat=True).first()
    )


def _raw_exchanges(count: int, cert_pem: str, client_key, server_key, chain, leaf_key, staple):  # type: ignore[no-untyped-def]
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
                server_status=staple,
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
    return spread(rates)


def run(*, quick: bool, database: str) -> list[Row]:
    from django.conf import settings

    from kmsclient.client import KMSClient
    from kmsportal.crypto import protocol
    from vault.clients import grant_create
    from vault.exchange import key_fetch
    from vault.server_identity import distribution_bootstrap, server_credential
    from vault.services import symmetric_key_create

    count = 60 if quick else 300
    repeats = 3
    max_seconds = 20.0 if quick else 60.0
    port = free_port()
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
    server_key, chain = server_credential()
    leaf_key = protocol.server_leaf_certificate({"server_certificate_chain": chain}).public_key()
    staple = _staple()

    raw = _raw_exchanges(count, cert_pem, client_key, server_key, chain, leaf_key, staple)
    raw()  # warm up
    raw_rates = []
    for _ in range(repeats):
        began = time.perf_counter()
        raw_rates.append(raw() / (time.perf_counter() - began))
    base, base_spread = spread(raw_rates)

    # 2. The whole exchange in this process: kmsclient's code, the server's service.
    local = KMSClient(
        url,
        files["cert"],
        files["key"],
        files["ca"],
        server_ca_spki_sha256=files["server_ca_spki"],
        deployment=files["deployment"],
        session=InProcessSession(),
    )
    local.fetch_key(KEY_NAME)  # warm up: the staple into the cache, signer loaded

    def in_process() -> float:
        began = time.perf_counter()
        for _ in range(count):
            local.fetch_key(KEY_NAME)
        return count / (time.perf_counter() - began)

    exchange, exchange_spread = spread([in_process() for _ in range(repeats)])

    # 1. Over HTTP, from a second process.
    server = gunicorn_start(port)
    try:
        workers = worker_pids(server.pid)
        idle = max(peak_rss_mib(pid) for pid in workers)
        sequential = _drive(
            url, files, count=count, repeats=repeats, threads=1, max_seconds=max_seconds
        )
        parallel = _drive(
            url, files, count=count, repeats=repeats, threads=2, max_seconds=max_seconds
        )
        serving = max(peak_rss_mib(pid) for pid in workers)
    finally:
        gunicorn_stop(server)

    # 3. Server time only, in this process.
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
            server_status=staple,
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
            "key fetch, the full exchange in one process, no HTTP (kmsclient + key_fetch "
            "service: chain, server identity and stapled-status checks, nonce, delivery, audit)",
            exchange,
            exchange_spread,
            baseline_name,
            base,
            base_spread,
            "ops/s",
            database,
            note=f"{count} fetches per run",
            target=">= 0.35" if database == "postgres" else ">= 0.5",  # issue 14
        ),
        Row(
            "key fetch over HTTP (gunicorn 2 workers, kmsclient in a second process, sequential)",
            *sequential,
            baseline_name,
            base,
            base_spread,
            "ops/s",
            database,
            note="HTTP included; client validates the server chain, identity and staple; "
            "rate limit off",
        ),
        Row(
            "key fetch over HTTP (gunicorn 2 workers, kmsclient, 2 client threads)",
            *parallel,
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
        Row(
            "peak RSS of a gunicorn worker after serving the key fetches above",
            serving,
            None,
            "idle worker after start-up",
            idle,
            None,
            "MiB",
            database,
        ),
    ]
