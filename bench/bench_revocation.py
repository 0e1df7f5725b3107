"""Revocation: CRL generation at 10k and 100k revoked certificates, one revocation at 100k,
and CRL downloads from gunicorn.

1. CRL generation for N revoked certificates (rows made with ``bulk_create``): our publish
   service (lock the CA row, read four columns of the revoked rows, build the entries in one
   list, sign with the cached CA signer, store the DER and its hash, null the previous
   CRL's bytes, audit event; one transaction) against bare ``cryptography`` building and
   signing the same CRL from the same entries already in memory, with the same key, the
   list passed to the ``CertificateRevocationListBuilder`` constructor, then DER. Two
   baselines: the documented API (``RevokedCertificateBuilder()`` and its setters per
   entry) and, marked [strict], the fastest way bare cryptography allows (the builder's
   constructor, extension objects shared per reason, as ``kmsportal.crypto.crl`` does).
   Target: ratio under 1.5.
2. Revoking one certificate with N already revoked, including the CRL regeneration in the
   same transaction, against the bare build of the N-entry CRL.
3. CRL downloads per second from gunicorn (2 sync workers, ``kmsportal/gunicorn.conf.py``)
   on loopback, driven by a second process (4 threads, ``http.client``, keep-alive where the
   server allows it: sync workers close after each response), against ``/healthz`` (no
   database, no template) in the same server and run; and the same for revalidation with
   the ETag (304, no body).

The CA key is RSA-3072 (the default CA key type).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from bench.harness import ROOT, Row, measure_seconds

REASONS = [
    "keyCompromise",
    "superseded",
    "cessationOfOperation",
    "unspecified",
    "affiliationChanged",
]

_DRIVER = r"""
import http.client, json, sys, threading, time
host, port, path, seconds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
headers = json.loads(sys.argv[6])
counts = [0] * threads
failures = []
deadline = time.perf_counter() + seconds
start_gate = threading.Barrier(threads + 1)
def work(index):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    start_gate.wait()
    while time.perf_counter() < deadline:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status not in (200, 304):
            failures.append(response.status)
            break
        counts[index] += 1
    connection.close()
workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for w in workers: w.start()
start_gate.wait()
began = time.perf_counter()
for w in workers: w.join()
elapsed = time.perf_counter() - began
print(json.dumps({"requests": sum(counts), "seconds": elapsed, "failures": failures}))
"""


def _bulk_revoked(ca, count: int, *, valid: int = 0) -> None:  # type: ignore[no-untyped-def]
    """``count`` revoked and ``valid`` valid certificate rows for ``ca``, in batches."""
    from pki.models import Certificate

    now = datetime.now(UTC).replace(microsecond=0)
    batch: list[Certificate] = []
    for index in range(count + valid):
        revoked = index < count
        reason = REASONS[index % len(REASONS)]
        batch.append(
            Certificate(
                ca=ca,
                serial_hex=format(secrets.randbits(159) | 1, "040X"),
                subject=f"CN=host-{index}.example.org",
                profile="tls-server",
                public_key="EC P-256",
                not_before=now - timedelta(days=30),
                not_after=now + timedelta(days=300),
                certificate_pem="",
                certificate_der=b"",
                fingerprint_sha256=secrets.token_hex(32).upper(),
                status="revoked" if revoked else "valid",
                revocation_reason=reason if revoked else "",
                revoked_at=now - timedelta(seconds=index) if revoked else None,
                invalidity_date=(
                    now - timedelta(days=2) if revoked and reason == "keyCompromise" else None
                ),
                source="csr",
                issued_by_name="bench",
            )
        )
        if len(batch) == 5000:
            Certificate.objects.bulk_create(batch)
            batch = []
    Certificate.objects.bulk_create(batch)


def _entries_in_memory(ca):  # type: ignore[no-untyped-def]
    """The same entries as the service reads, as plain Python values (not timed)."""
    from pki.crl import crl_entries

    return crl_entries(ca.pk)


def _bare_crl(ca, signer, entries, *, tuned: bool):  # type: ignore[no-untyped-def]
    """Build, sign and encode the CRL with bare cryptography from entries in memory.

    ``tuned=False``: the documented API, one ``RevokedCertificateBuilder()`` with its setters
    per entry (what PERF_FACTS measured). ``tuned=True``: the fastest bare cryptography
    allows, the builder's constructor with extension objects shared per reason (what
    ``kmsportal.crypto.crl`` does). Both pass the list to the CRL builder's constructor.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

    issuer = x509.load_der_x509_certificate(bytes(ca.certificate_der))
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    per_reason = {
        reason: []
        if reason in (None, "unspecified")
        else [
            x509.Extension(
                CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(x509.ReasonFlags(reason))
            )
        ]
        for reason in [None, *REASONS]
    }
    invalidity_oid = CRLEntryExtensionOID.INVALIDITY_DATE

    def tuned_entries() -> list[x509.RevokedCertificate]:
        revoked = []
        for serial, revoked_at, reason, invalid_since in entries:
            extensions = per_reason[reason]
            if invalid_since is not None:
                extensions = [
                    *extensions,
                    x509.Extension(invalidity_oid, False, x509.InvalidityDate(invalid_since)),
                ]
            revoked.append(x509.RevokedCertificateBuilder(serial, revoked_at, extensions).build())
        return revoked

    def documented_entries() -> list[x509.RevokedCertificate]:
        revoked = []
        for serial, revoked_at, reason, invalid_since in entries:
            builder = x509.RevokedCertificateBuilder().serial_number(serial)
            builder = builder.revocation_date(revoked_at)
            if reason not in (None, "unspecified"):
                builder = builder.add_extension(
                    x509.CRLReason(x509.ReasonFlags(reason)), critical=False
                )
            if invalid_since is not None:
                builder = builder.add_extension(x509.InvalidityDate(invalid_since), critical=False)
            revoked.append(builder.build())
        return revoked

    def build() -> bytes:
        revoked = tuned_entries() if tuned else documented_entries()
        now = datetime.now(UTC).replace(microsecond=0)
        builder = x509.CertificateRevocationListBuilder(
            issuer_name=issuer.subject,
            last_update=now,
            next_update=now + timedelta(days=7),
            extensions=[
                x509.Extension(
                    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                    False,
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                ),
                x509.Extension(ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(1)),
            ],
            revoked_certificates=revoked,
        )
        return signer.sign_crl(builder).public_bytes(serialization.Encoding.DER)

    return build


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_gunicorn(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "kmsportal/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def _drive(port: int, path: str, seconds: float, headers: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, "127.0.0.1", str(port), path, str(seconds), "4",
         json.dumps(headers)],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    if result["failures"]:
        raise RuntimeError(f"{path} answered {result['failures']}")
    return result["requests"] / result["seconds"]


def _rates(port: int, path: str, seconds: float, repeats: int, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    _drive(port, path, 0.5, headers)  # warm up both workers
    rates = [_drive(port, path, seconds, headers) for _ in range(repeats)]
    median = statistics.median(rates)
    return median, (max(rates) - min(rates)) / median if median else 0.0


def run(*, quick: bool, database: str) -> list[Row]:
    from pki.models import Certificate, CRLTrigger, RevocationList
    from pki.services import certificate_authority_create, certificate_revoke, crl_publish
    from pki.signers import ca_signer

    sizes = (2_000, 10_000) if quick else (10_000, 100_000)
    repeats = 3
    rows: list[Row] = []
    root = certificate_authority_create(
        actor=None, name="bench-root", subject="CN=Bench Revocation Root", key_type="rsa3072"
    )
    cas = {}
    for size in sizes:
        ca = certificate_authority_create(
            actor=None,
            name=f"bench-crl-{size}",
            subject=f"CN=Bench CRL CA {size}",
            parent=root,
            key_type="rsa3072",
        )
        _bulk_revoked(ca, size, valid=repeats + 2 if size == sizes[-1] else 0)
        cas[size] = ca

    for size, ca in cas.items():
        signer = ca_signer(ca)  # loaded once, as in a running server
        entries = _entries_in_memory(ca)
        assert len(entries) == size
        documented, documented_spread = measure_seconds(
            _bare_crl(ca, signer, entries, tuned=False), repeats=repeats
        )
        tuned, tuned_spread = measure_seconds(
            _bare_crl(ca, signer, entries, tuned=True), repeats=repeats
        )
        ours, spread = measure_seconds(
            lambda ca=ca: crl_publish(actor=None, ca=ca, trigger=CRLTrigger.MANUAL),
            repeats=repeats,
        )
        latest = RevocationList.objects.filter(ca=ca).order_by("-crl_number").first()
        task = (
            f"CRL generation, {size:,} revoked (publish service: lock, read, build, sign, "
            "store, audit)"
        )
        rows.append(
            Row(
                task,
                ours,
                spread,
                "bare cryptography, documented API: RevokedCertificateBuilder setters per "
                "entry, CRL builder(list), sign, DER; same key",
                documented,
                documented_spread,
                "s",
                database,
                note=f"CRL {latest.size:,} bytes",
            )
        )
        rows.append(
            Row(
                task + " [strict]",
                ours,
                spread,
                "bare cryptography, tuned: RevokedCertificateBuilder constructor, shared "
                "extensions, CRL builder(list), sign, DER; same key",
                tuned,
                tuned_spread,
                "s",
                database,
                note="the difference is mostly reading the rows from the database",
            )
        )

    largest = sizes[-1]
    ca = cas[largest]
    valid = iter(list(Certificate.objects.filter(ca=ca, status="valid")))
    bare = _bare_crl(ca, ca_signer(ca), _entries_in_memory(ca), tuned=False)
    base, base_spread = measure_seconds(bare, repeats=repeats)
    ours, spread = measure_seconds(
        lambda: certificate_revoke(actor=None, certificate=next(valid), reason="keyCompromise"),
        repeats=repeats,
    )
    rows.append(
        Row(
            f"revoke one certificate with {largest:,} revoked (incl. CRL regeneration)",
            ours,
            spread,
            f"bare cryptography build of the {largest:,}-entry CRL (documented API)",
            base,
            base_spread,
            "s",
            database,
        )
    )

    # Downloads from gunicorn. The CRL of the smaller CA (the larger one is mostly bytes on
    # the wire), anonymous, as relying parties fetch it.
    served = cas[sizes[0]]
    latest = RevocationList.objects.filter(ca=served).order_by("-crl_number").first()
    seconds = 2.0 if quick else 5.0
    port = _free_port()
    from django.db import connections

    connections.close_all()  # nothing held open while the server runs
    server = _start_gunicorn(port)
    try:
        path = f"/pki/crl/{served.name}.crl"
        trivial, trivial_spread = _rates(port, "/healthz", seconds, repeats, {})
        full, full_spread = _rates(port, path, seconds, repeats, {})
        cached, cached_spread = _rates(
            port, path, seconds, repeats, {"If-None-Match": f'"{latest.sha256}"'}
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    rows.append(
        Row(
            f"CRL download from gunicorn (2 workers), {sizes[0]:,} entries",
            full,
            full_spread,
            "/healthz (trivial view, no database) in the same server",
            trivial,
            trivial_spread,
            "req/s",
            database,
            note=f"{latest.size:,} bytes per response; driver: 4 threads in a second process",
        )
    )
    rows.append(
        Row(
            "CRL revalidation with the ETag (304, no body) from gunicorn (2 workers)",
            cached,
            cached_spread,
            "/healthz (trivial view, no database) in the same server",
            trivial,
            trivial_spread,
            "req/s",
            database,
        )
    )
    return rows
