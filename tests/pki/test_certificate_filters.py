"""The certificate list's expiry filters, as the dashboard links to them: validity
(``unexpired``/``expired`` now), and notAfter within UTC days (``expires_after`` inclusive,
``expires_before`` exclusive), combined with status."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from pki import services
from pki.models import Certificate, CertificateAuthority

from .conftest import csr_pem

pytestmark = pytest.mark.django_db


def subjects(client: Client, **query: object) -> list[str]:
    response = client.get("/pki/certificates/", {"profile": "tls-server", **query})
    assert response.status_code == 200, response.content
    return sorted(c.subject for c in response.context["page"].certificates)


@pytest.fixture
def today() -> datetime:
    return datetime.combine(timezone.now().astimezone(UTC).date(), time.min, tzinfo=UTC)


@pytest.fixture
def certificates(issuing: CertificateAuthority, ec_key, today: datetime) -> None:
    def issue(name: str, days: int) -> Certificate:
        return services.certificate_issue_from_csr(
            actor=None,
            ca=issuing,
            csr_pem_or_der=csr_pem(ec_key, subject=f"CN={name}"),
            profile="tls-server",
            days=days,
        )

    issue("five", 5)
    issue("forty", 40)
    services.certificate_revoke(actor=None, certificate=issue("revoked", 40), reason="superseded")
    expired = issue("expired", 10)
    edge = issue("edge", 90)
    # Deadlines moved: one certificate has expired, one expires exactly at a UTC midnight.
    now = timezone.now()
    Certificate.objects.filter(pk=expired.pk).update(
        not_before=now - timedelta(days=20), not_after=now - timedelta(days=1)
    )
    Certificate.objects.filter(pk=edge.pk).update(not_after=today + timedelta(days=50))


def day(today: datetime, days: int) -> str:
    return (today + timedelta(days=days)).date().isoformat()


def test_validity(operator: Client, certificates) -> None:
    assert subjects(operator, validity="expired") == ["CN=expired"]
    assert subjects(operator, validity="unexpired") == [
        "CN=edge",
        "CN=five",
        "CN=forty",
        "CN=revoked",
    ]
    assert subjects(operator, status="valid", validity="unexpired") == [
        "CN=edge",
        "CN=five",
        "CN=forty",
    ]
    assert subjects(operator, status="revoked", validity="expired") == []


def test_expiry_window_in_utc_days(operator: Client, certificates, today: datetime) -> None:
    assert subjects(operator, expires_after=day(today, 1), expires_before=day(today, 30)) == [
        "CN=five"
    ]
    assert subjects(operator, expires_after=day(today, 30), expires_before=day(today, 60)) == [
        "CN=edge",
        "CN=forty",
        "CN=revoked",
    ]
    assert subjects(
        operator,
        status="valid",
        validity="unexpired",
        expires_after=day(today, 30),
        expires_before=day(today, 60),
    ) == ["CN=edge", "CN=forty"]
    assert subjects(operator, expires_before=day(today, 0)) == ["CN=expired"]
    assert subjects(operator, expires_after=day(today, 41)) == ["CN=edge"]


def test_expires_after_is_inclusive_and_expires_before_exclusive(
    operator: Client, certificates, today: datetime
) -> None:
    assert subjects(operator, expires_after=day(today, 50), expires_before=day(today, 51)) == [
        "CN=edge"
    ]
    assert subjects(operator, expires_after=day(today, 49), expires_before=day(today, 50)) == []


def test_window_filters_combine_with_expiring_within(operator: Client, certificates) -> None:
    assert subjects(operator, expiring=30) == ["CN=five"]
    assert subjects(operator, expiring=90, validity="unexpired") == [
        "CN=edge",
        "CN=five",
        "CN=forty",
    ]


def test_the_filters_are_on_the_form(operator: Client, certificates) -> None:
    page = operator.get("/pki/certificates/").content.decode()
    for name in ("validity", "expires_after", "expires_before"):
        assert f'name="{name}"' in page, name
    assert 'type="date"' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"expires_after": "2030-02-01", "expires_before": "2030-02-01"}, "Choose a day after"),
        ({"expires_after": "2030-03-01", "expires_before": "2030-02-01"}, "Choose a day after"),
        ({"expires_after": "2030-13-01"}, "Enter a valid date"),
        ({"expires_before": "soon"}, "Enter a valid date"),
        ({"validity": "forever"}, "Select a valid choice"),
    ],
)
def test_bad_filter_input_is_a_clear_400(operator: Client, query: dict, message: str) -> None:
    response = operator.get("/pki/certificates/", query)
    assert response.status_code == 400
    assert message in response.content.decode()
