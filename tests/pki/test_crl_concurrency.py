"""Concurrent revocations on PostgreSQL: cRLNumber strictly increasing per CA, every CRL
listing every revocation committed before it, no revocation lost."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from audit.checking import audit_chain_check
from kmsportal.crypto.crl import crl_summary, load_crl, revoked_serials
from pki import services
from pki.models import Certificate, CertificateAuthority, RevocationList

from .conftest import csr_pem

THREADS = 8
PER_THREAD = 5

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_eight_concurrent_revokers_get_strictly_increasing_crl_numbers(ec_key) -> None:
    root = services.certificate_authority_create(
        actor=None, name="crl-root", subject="CN=CRL Concurrency Root", key_type="ecp256"
    )
    ca = services.certificate_authority_create(
        actor=None, name="crl-ca", subject="CN=CRL Concurrency CA", parent=root, key_type="ecp256"
    )
    csr = csr_pem(ec_key)
    records = [
        services.certificate_issue_from_csr(
            actor=None, ca=ca, csr_pem_or_der=csr, profile="tls-server"
        )
        for _ in range(THREADS * PER_THREAD)
    ]
    # Also a CRL publisher racing the revokers, as `publish_crls --force` from cron would.
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def revoker(mine: list[Certificate]) -> None:
        try:
            barrier.wait()
            for record in mine:
                services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def publisher() -> None:
        try:
            barrier.wait()
            for _ in range(PER_THREAD):
                services.crl_publish(actor=None, ca=ca)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=revoker, args=(records[i::THREADS],)) for i in range(THREADS)
    ]
    threads.append(threading.Thread(target=publisher))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert errors == []

    crls = list(RevocationList.objects.filter(ca=ca).order_by("id"))
    numbers = [row.crl_number for row in crls]
    # Inserted in commit order (the CA lock serialises publishers), numbered 1, 2, 3, ...:
    # complete and delta CRLs share the sequence (RFC 5280 5.2.3). A revocation publishes a
    # delta CRL; a publication (and the CA's creation) a complete CRL and its delta.
    assert numbers == list(range(1, 1 + 2 + THREADS * PER_THREAD + 2 * PER_THREAD))
    complete = [row for row in crls if not row.is_delta]
    deltas = [row for row in crls if row.is_delta]
    # Complete CRLs list every revocation committed before them: never fewer entries.
    counts = [row.entry_count for row in complete]
    assert counts == sorted(counts)
    # Every delta names the newest complete CRL committed before it as its base.
    base = None
    for row in crls:
        if row.is_delta:
            assert row.base_crl_number == base
        else:
            base = row.crl_number
    # The newest complete CRL and its newest delta together list every revocation.
    newest = load_crl(bytes(complete[-1].crl_der))
    delta = load_crl(bytes(deltas[-1].crl_der))
    assert crl_summary(delta).crl_number == numbers[-1]
    assert crl_summary(delta).base_crl_number == crl_summary(newest).crl_number
    listed = set(revoked_serials(newest)) | set(revoked_serials(delta))
    assert listed == {int(r.serial_hex, 16) for r in records}
    assert not Certificate.objects.filter(ca=ca, status="valid").exists()
    assert CertificateAuthority.objects.get(pk=ca.pk).state == "active"
    report = audit_chain_check()
    assert report.ok, report.problem
