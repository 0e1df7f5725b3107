"""pki's raw SQL (`pki.queries`) gives what the equivalent ORM query gives, on real rows.

Run on SQLite and PostgreSQL (DATABASE_URL): the raw queries exist for speed only, so any
difference from the ORM form, on either database, is a bug.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from pki import queries, services
from pki.models import Certificate, CertificateAuthority, CertificateStatus, RevocationList

from .conftest import csr_pem

pytestmark = pytest.mark.django_db


def _aware(value: datetime | str | None) -> datetime | None:
    """A date as the cursor gives it (SQLite: naive UTC, or text) as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@pytest.fixture
def issued(issuing: CertificateAuthority, ec_key) -> list[Certificate]:
    """Four certificates of two profiles, one revoked for keyCompromise with an invalidity
    date, one on hold."""
    records = [
        services.certificate_issue_from_csr(
            actor=None,
            ca=issuing,
            csr_pem_or_der=csr_pem(
                ec_key, subject=f"CN=host{i}.example.org", sans=(f"dns:host{i}.example.org",)
            ),
            profile="tls-client" if i % 2 else "tls-server",
        )
        for i in range(4)
    ]
    services.certificate_revoke(
        actor=None,
        certificate=records[1],
        reason="keyCompromise",
        invalidity_date=timezone.now() - timedelta(days=2),
    )
    services.certificate_revoke(actor=None, certificate=records[2], reason="certificateHold")
    return [Certificate.objects.get(pk=r.pk) for r in records]


def _orm_client_certificate(serial_hex: str, ca_name: str, profile: str):  # type: ignore[no-untyped-def]
    record = (
        Certificate.objects.select_related("ca")
        .filter(serial_hex=serial_hex, ca__name=ca_name, profile=profile)
        .first()
    )
    if record is None:
        return None
    return record.pk, record.status, bytes(record.certificate_der), bytes(record.ca.certificate_der)


def test_client_certificate_row_is_the_orm_row(issued: list[Certificate]) -> None:
    asked = [(r.serial_hex, "issuing", r.profile) for r in issued]
    asked += [
        (issued[0].serial_hex, "issuing", "tls-client"),  # wrong profile
        (issued[0].serial_hex, "root", issued[0].profile),  # wrong CA
        ("00" * 20, "issuing", "tls-server"),  # no such serial
    ]
    answers = [
        queries.client_certificate_row(serial_hex=serial, ca_name=ca, profile=profile)
        for serial, ca, profile in asked
    ]
    assert answers == [_orm_client_certificate(*a) for a in asked]
    assert answers[1] is not None and answers[1][1] == CertificateStatus.REVOKED
    assert answers[-3:] == [None, None, None]


def test_newest_crl_row_is_the_orm_row(issued: list[Certificate]) -> None:
    services.crl_publish(actor=None, ca=CertificateAuthority.objects.get(name="issuing"))
    for ca_name in ("root", "issuing", "missing"):
        for delta in (False, True):
            row = queries.newest_crl_row(ca_name=ca_name, delta=delta)
            orm = (
                RevocationList.objects.filter(ca__name=ca_name, is_delta=delta)
                .order_by("-crl_number")
                .values_list("id", "sha256", "this_update", "next_update")
                .first()
            )
            if orm is None:
                assert row is None
                continue
            assert row is not None
            assert (row[0], row[1], _aware(row[2]), _aware(row[3])) == orm


def test_crl_entry_rows_are_the_orm_rows(issued: list[Certificate]) -> None:
    ca = CertificateAuthority.objects.get(name="issuing")
    since = min(r.revoked_at for r in issued if r.revoked_at) + timedelta(microseconds=1)
    for bound in (None, since, timezone.now() + timedelta(hours=1)):
        rows = queries.crl_entry_rows(ca.pk, since=bound)
        orm = Certificate.objects.filter(ca=ca, status=CertificateStatus.REVOKED)
        if bound is not None:
            orm = orm.filter(revoked_at__gte=bound)
        expected = sorted(
            orm.values_list("serial_hex", "revoked_at", "revocation_reason", "invalidity_date")
        )
        assert (
            sorted(
                (serial, _aware(revoked), reason, _aware(invalid))
                for serial, revoked, reason, invalid in rows
            )
            == expected
        )
    assert len(queries.crl_entry_rows(ca.pk)) == 2  # the keyCompromise and the hold


def test_crl_der_store_writes_what_the_orm_reads(issuing: CertificateAuthority) -> None:
    row = RevocationList.objects.filter(ca=issuing, is_delta=False).first()
    assert row is not None
    der = bytes(range(256)) * 3
    queries.crl_der_store(pk=row.pk, der=der)
    assert bytes(RevocationList.objects.get(pk=row.pk).crl_der) == der


def test_certificate_standing_row_is_the_orm_answer(issued: list[Certificate]) -> None:
    for record in issued:
        for now in (record.not_after - timedelta(seconds=1), record.not_after, timezone.now()):
            assert queries.certificate_standing_row(pk=record.pk, now=now) == (
                record.status,
                record.not_after <= now,
            )
    assert queries.certificate_standing_row(pk=10**9, now=timezone.now()) is None
