"""Concurrent revocations on PostgreSQL: cRLNumber strictly increasing per CA, every CRL
listing every revocation committed before it, no revocation lost."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connection, connections

from audit.services import audit_chain_check
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
    # Inserted in commit order (the CA lock serialises publishers), numbered 1, 2, 3, ...
    assert numbers == list(range(1, 2 + THREADS * PER_THREAD + PER_THREAD))
    # Each CRL lists every revocation committed before it: the counts never go down, and each
    # revocation adds exactly one.
    counts = [row.entry_count for row in crls]
    assert counts == sorted(counts) and counts[-1] == THREADS * PER_THREAD
    assert sum(1 for a, b in itertools.pairwise(counts) if b == a + 1) == len(records)
    newest = load_crl(bytes(crls[-1].crl_der))
    assert crl_summary(newest).crl_number == numbers[-1]
    assert set(revoked_serials(newest)) == {int(r.serial_hex, 16) for r in records}
    assert not Certificate.objects.filter(ca=ca, status="valid").exists()
    assert CertificateAuthority.objects.get(pk=ca.pk).state == "active"
    report = audit_chain_check()
    assert report.ok, report.problem
