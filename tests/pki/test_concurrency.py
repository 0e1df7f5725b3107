"""Concurrent issuance on PostgreSQL: serial numbers stay unique per CA, enforced by the
database constraint, and a collision is retried with a fresh serial, not an error."""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable

import pytest
from django.db import IntegrityError, connection, connections, transaction

from audit.checking import audit_chain_check
from audit.models import AuditEvent
from pki import services
from pki.models import Certificate, CertificateAuthority

from .conftest import csr_pem

THREADS = 8
PER_THREAD = 50

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def issue_concurrently(ca: CertificateAuthority, csr: bytes) -> list[BaseException]:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(PER_THREAD):
                services.certificate_issue_from_csr(
                    actor=None, ca=ca, csr_pem_or_der=csr, profile="tls-server"
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return errors


@pytest.fixture
def ca() -> CertificateAuthority:
    root = services.certificate_authority_create(
        actor=None, name="conc-root", subject="CN=Concurrency Root", key_type="ecp256"
    )
    return services.certificate_authority_create(
        actor=None, name="conc", subject="CN=Concurrency CA", parent=root, key_type="ecp256"
    )


def check_result(ca: CertificateAuthority) -> None:
    serials = list(Certificate.objects.filter(ca=ca).values_list("serial_hex", flat=True))
    assert len(serials) == THREADS * PER_THREAD
    assert len(set(serials)) == len(serials)
    assert AuditEvent.objects.filter(action="certificate.issued").count() == THREADS * PER_THREAD
    report = audit_chain_check()
    assert report.ok, report.problem


def test_eight_issuers_get_unique_serials(ca: CertificateAuthority, ec_key) -> None:
    errors = issue_concurrently(ca, csr_pem(ec_key))
    assert errors == []
    check_result(ca)
    # The uniqueness is the database's, not only the random generator's.
    existing = Certificate.objects.filter(ca=ca).first()
    existing.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        existing.save(force_insert=True)


def test_colliding_serials_are_retried(
    ca: CertificateAuthority, ec_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every serial is handed out twice, to whichever issuers ask next: many inserts race for
    # the same (CA, serial) and all but one must retry.
    lock = threading.Lock()
    pairs = itertools.chain.from_iterable(
        (s, s) for s in iter(lambda: secrets.randbits(159) | 1, 0)
    )
    draws: list[int] = []

    def twice() -> int:
        with lock:
            value = next(pairs)
            draws.append(value)
            return value

    draw: Callable[[], int] = twice
    monkeypatch.setattr(services.records, "new_serial_number", draw)
    monkeypatch.setattr(services.records, "_SERIAL_ATTEMPTS", 50)
    errors = issue_concurrently(ca, csr_pem(ec_key))
    assert errors == []
    check_result(ca)
    assert len(draws) > THREADS * PER_THREAD  # collisions happened and were retried
