"""Reads of certificates: the keyset-paginated list, details, the overview, and what the
key fetch needs of a presented client certificate (`client_certificate_for_fetch`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.x509 import CertificateSummary

from ..models import (
    SERIAL_HEX_DIGITS,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    serial_to_hex,
)
from ..queries import certificate_standing_row, client_certificate_row
from .cas import (
    PAGE_SIZE,
    VIEW_CERTIFICATE,
    _certificate_columns,
    _describe,
    ca_chain,
)

# --- certificates ----------------------------------------------------------------------------


_SERIAL_TEXT = re.compile(r"[0-9A-Fa-f:\s]+")


def _serial_search(text: str) -> str | None:
    """The stored form of a serial typed with or without colons, or None if it is not one."""
    if not _SERIAL_TEXT.fullmatch(text):
        return None
    digits = re.sub(r"[:\s]", "", text).upper().lstrip("0") or "0"
    if len(digits) > SERIAL_HEX_DIGITS:
        return None
    return digits.zfill(SERIAL_HEX_DIGITS)


def _utc_midnight(day: date) -> datetime:
    """The first instant of a UTC calendar day (the list's date filters are UTC days)."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def _expiring_within(now: datetime, days: int) -> Q:
    """Valid (not revoked), not yet expired, notAfter within ``days`` days."""
    return Q(
        status=CertificateStatus.VALID,
        not_after__gt=now,
        not_after__lte=now + timedelta(days=days),
    )


def _validity(now: datetime, validity: str) -> Q:
    """``unexpired``: notAfter still ahead; ``expired``: notAfter passed (any status)."""
    if validity == "unexpired":
        return Q(not_after__gt=now)
    if validity == "expired":
        return Q(not_after__lte=now)
    raise ValueError(f"unknown validity filter {validity!r}")


def _expires_between(start: date | None, end: date | None) -> Q:
    """notAfter on or after the UTC day ``start`` and before the UTC day ``end``."""
    condition = Q()
    if start is not None:
        condition &= Q(not_after__gte=_utc_midnight(start))
    if end is not None:
        condition &= Q(not_after__lt=_utc_midnight(end))
    return condition


@dataclass(frozen=True)
class CertificatePage:
    certificates: list[Certificate]
    next_cursor: int | None  # pass as ?after= for the next page
    now: datetime


def certificate_page(
    *,
    user: User,
    ca: str = "",
    profile: str = "",
    status: str = "",
    expiring_within_days: int | None = None,
    validity: str = "",
    expires_after: date | None = None,
    expires_before: date | None = None,
    search: str = "",
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> CertificatePage:
    """One page of certificates, newest first.

    Filters: CA name, profile, status (valid/revoked), expiring within N days (valid, not
    yet expired, notAfter within N days), validity (``unexpired`` or ``expired`` now),
    notAfter on or after the UTC day ``expires_after`` and before the UTC day
    ``expires_before``; ``search`` matches the subject or a SAN (case-insensitive
    substring) or a serial number (hex, colons allowed, exact).
    """
    now = timezone.now()
    if not user.has_perm(VIEW_CERTIFICATE):
        return CertificatePage([], None, now)
    queryset = _certificate_columns(Certificate.objects.all()).order_by("-id")
    if ca:
        queryset = queryset.filter(ca__name=ca)
    if profile:
        queryset = queryset.filter(profile=profile)
    if status:
        queryset = queryset.filter(status=status)
    if expiring_within_days is not None:
        queryset = queryset.filter(_expiring_within(now, expiring_within_days))
    if validity:
        queryset = queryset.filter(_validity(now, validity))
    if expires_after is not None or expires_before is not None:
        queryset = queryset.filter(_expires_between(expires_after, expires_before))
    search = search.strip()
    if search:
        condition = Q(subject__icontains=search) | Q(sans__icontains=search)
        serial = _serial_search(search)
        if serial is not None:
            condition |= Q(serial_hex=serial)
        queryset = queryset.filter(condition)
    if after is not None:
        queryset = queryset.filter(id__lt=after)
    rows = list(queryset[: size + 1])
    certificates = rows[:size]
    return CertificatePage(certificates, certificates[-1].pk if len(rows) > size else None, now)


def certificate_get(*, user: User, pk: int) -> Certificate | None:
    if not user.has_perm(VIEW_CERTIFICATE):
        return None
    return (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .filter(pk=pk)
        .first()
    )


@dataclass(frozen=True)
class CertificateDetail:
    certificate: Certificate
    summary: CertificateSummary
    chain: list[CertificateAuthority]
    timeline: list[AuditEvent]


def certificate_detail(*, certificate: Certificate) -> CertificateDetail:
    """The decoded certificate (not its PEM), its issuing chain and its audit trail."""
    return CertificateDetail(
        certificate=certificate,
        summary=_describe(certificate.certificate_der),
        chain=ca_chain(ca=certificate.ca),
        timeline=list(
            AuditEvent.objects.filter(
                target_type="pki.Certificate", target_id=str(certificate.pk)
            ).order_by("-sequence")[:50]
        ),
    )


def certificate_fullchain_pem(*, certificate: Certificate) -> str:
    """The certificate followed by its intermediate CAs, without the root (what a TLS server
    sends; the root is the relying party's trust anchor)."""
    intermediates = [c for c in ca_chain(ca=certificate.ca) if c.parent_id is not None]
    return certificate.certificate_pem + "".join(c.certificate_pem for c in intermediates)


@dataclass(frozen=True)
class ExpiryWindow:
    """Valid, unexpired certificates whose notAfter falls in [start, end) (UTC days)."""

    start: date
    end: date  # the first day after the window
    count: int

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)


@dataclass(frozen=True)
class CertificateOverview:
    """The dashboard's certificate numbers. Valid, expired and revoked add up to every
    certificate; each number matches a certificate list filter exactly."""

    valid: int  # status valid, notAfter ahead: ?status=valid&validity=unexpired
    expiring_30: int  # ?expiring=30
    expiring_90: int  # ?expiring=90
    expired: int  # status valid, notAfter passed: ?status=valid&validity=expired
    revoked: int  # ?status=revoked (expired or not)
    windows: list[ExpiryWindow]  # consecutive, from today (UTC)


def certificate_overview(
    *,
    user: User,
    now: datetime | None = None,
    windows: int = 13,
    window_days: int = 7,
) -> CertificateOverview | None:
    """Certificate totals and upcoming expiries per window (13 weeks from today, UTC), for
    users who may read certificates.

    One aggregate query of conditional counts over the (status, notAfter) columns: no
    certificate row is loaded, whatever the table's size.
    """
    if not user.has_perm(VIEW_CERTIFICATE):
        return None
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    bounds = [
        (today + timedelta(days=i * window_days), today + timedelta(days=(i + 1) * window_days))
        for i in range(windows)
    ]
    valid_now = Q(status=CertificateStatus.VALID) & _validity(now, "unexpired")
    counts = Certificate.objects.aggregate(
        valid=Count("pk", filter=valid_now),
        expiring_30=Count("pk", filter=_expiring_within(now, 30)),
        expiring_90=Count("pk", filter=_expiring_within(now, 90)),
        expired=Count("pk", filter=Q(status=CertificateStatus.VALID) & _validity(now, "expired")),
        revoked=Count("pk", filter=Q(status=CertificateStatus.REVOKED)),
        **{
            f"window_{i}": Count("pk", filter=valid_now & _expires_between(start, end))
            for i, (start, end) in enumerate(bounds)
        },
    )
    return CertificateOverview(
        valid=counts["valid"],
        expiring_30=counts["expiring_30"],
        expiring_90=counts["expiring_90"],
        expired=counts["expired"],
        revoked=counts["revoked"],
        windows=[
            ExpiryWindow(start, end, counts[f"window_{i}"]) for i, (start, end) in enumerate(bounds)
        ],
    )


def certificate_by_id(*, pk: int) -> Certificate:
    """The certificate row ``pk`` (raises Certificate.DoesNotExist if there is none)."""
    return Certificate.objects.get(pk=pk)


def certificate_chain_pems(*, certificate: Certificate) -> list[str]:
    """PEM of ``certificate`` followed by its CA's and each ancestor's, up to the root."""
    chain = [certificate.certificate_pem]
    ca: CertificateAuthority | None = certificate.ca
    while ca is not None:
        chain.append(ca.certificate_pem)
        ca = ca.parent
    return chain


@dataclass(frozen=True)
class ClientCertificate:
    """What the key fetch needs to know of a presented client certificate."""

    pk: int
    is_revoked: bool
    der: bytes
    ca_der: bytes


def client_certificate_for_fetch(
    *, serial_number: int, ca_name: str, profile: str
) -> ClientCertificate | None:
    """The certificate with this serial and profile issued by the CA called ``ca_name``, as
    stored now (the caller compares ``der`` with what it was shown); None if there is none.
    One indexed query (`pki.queries.client_certificate_row`: the key fetch's hot path)."""
    row = client_certificate_row(
        serial_hex=serial_to_hex(serial_number), ca_name=ca_name, profile=profile
    )
    if row is None:
        return None
    pk, status, der, ca_der = row
    return ClientCertificate(pk, status == CertificateStatus.REVOKED, der, ca_der)


@dataclass(frozen=True)
class CertificateStanding:
    """Whether a certificate is revoked, and whether it has expired, at a given moment."""

    is_revoked: bool
    is_expired: bool


def certificate_standing(*, pk: int, now: datetime) -> CertificateStanding | None:
    """Certificate ``pk``'s revocation and expiry at ``now`` as stored now; None if there is
    no such certificate. One indexed query (`pki.queries.certificate_standing_row`: every
    operations-API request asks it)."""
    row = certificate_standing_row(pk=pk, now=now)
    if row is None:
        return None
    status, expired = row
    return CertificateStanding(status == CertificateStatus.REVOKED, expired)
