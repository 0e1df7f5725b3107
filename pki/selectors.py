"""Reads for the PKI pages; who sees what is decided here.

No read ever loads a CA's sealed private key (`defer`), and no page gets one. The
certificate list is keyset-paginated on the primary key (newest first), so a page costs the
same with ten certificates or a million: no OFFSET, no COUNT(*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from cryptography import x509
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.crl import validate_crl
from kmsportal.crypto.profiles import PROFILES, SUB_CA_PROFILE_NAME
from kmsportal.crypto.x509 import CertificateSummary, describe_certificate
from kmsportal.two_person import ApprovalSummary, pending_summary

from .distribution import ca_distribution_points
from .errors import PkiError
from .models import (
    SERIAL_HEX_DIGITS,
    CARevocationRequest,
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    OCSPResponder,
    RevocationList,
)
from .revocation import certificate_revocation_preview

PAGE_SIZE = 50

VIEW_CA = "pki.view_certificateauthority"
VIEW_CERTIFICATE = "pki.view_certificate"
VIEW_CA_REVOCATION_REQUEST = "pki.view_carevocationrequest"
#: Asking for, approving and rejecting a CA revocation (the revoke page's permission).
REVOKE = "pki.revoke_certificate"


def _cas() -> QuerySet[CertificateAuthority]:
    return CertificateAuthority.objects.defer("sealed_private_key")


def profile_choices() -> list[tuple[str, str]]:
    """Leaf profiles as (name, "name: description"), for the issuance forms."""
    # kms-server is the KMS's own profile: no page issues it (pki.services refuses it).
    return [
        (p.name, f"{p.name}: {p.description}") for p in PROFILES.values() if p.name != "kms-server"
    ]


def profile_filter_choices() -> list[tuple[str, str]]:
    """Every profile a stored certificate can have (leaf profiles and sub-ca)."""
    return [(name, name) for name in [*PROFILES, SUB_CA_PROFILE_NAME]]


# --- certificate authorities -----------------------------------------------------------------


def ca_list(*, user: User) -> list[CertificateAuthority]:
    """Every CA, roots first then by name; empty for users who may not see CAs."""
    if not user.has_perm(VIEW_CA):
        return []
    return list(_cas().select_related("parent").order_by("parent_id", "name"))


def ca_get(*, user: User, name: str) -> CertificateAuthority | None:
    if not user.has_perm(VIEW_CA):
        return None
    return _cas().select_related("parent").filter(name=name).first()


def internal_ca_names() -> set[str]:
    """The key distribution's own CAs: their certificates come from enrollment and
    `bootstrap`, never from the portal's issuance forms (nor do CAs go under them)."""
    names = {
        settings.KMS_IDENTITY_CA_NAME,
        getattr(settings, "KMS_SERVER_IDENTITY_CA_NAME", ""),
    }
    return {name for name in names if name}


def _signing_cas(user: User) -> QuerySet[CertificateAuthority]:
    """Active, unexpired CAs other than the internal ones, by name."""
    if not user.has_perm(VIEW_CA):
        return _cas().none()
    return (
        _cas()
        .filter(state=CAState.ACTIVE, not_after__gt=timezone.now(), server_identity=False)
        .exclude(name__in=internal_ca_names())
        .order_by("name")
    )


def ca_issuing_choices(*, user: User) -> list[tuple[str, str]]:
    """CAs the issuance forms offer, as (name, label): active intermediates. Roots sign
    intermediates only (their key is the one everything trusts); the internal CAs are
    not offered (see `internal_ca_names`)."""
    return [
        (ca.name, f"{ca.name} ({ca.subject})")
        for ca in _signing_cas(user).filter(parent__isnull=False).only("name", "subject")
    ]


def ca_parent_choices(*, user: User) -> list[tuple[str, str]]:
    """CAs that may sign a new intermediate: active, and their path length leaves room for
    one more CA below them (a CA with path length 0 issues end-entity certificates only)."""
    return [
        (ca.name, f"{ca.name} ({ca.subject})")
        for ca in _signing_cas(user)
        .filter(Q(path_length__isnull=True) | Q(path_length__gt=0))
        .only("name", "subject")
    ]


def ca_public_get(*, name: str) -> CertificateAuthority | None:
    """A CA for the public certificate download (AIA caIssuers): no sign-in needed, since a
    CA certificate is public by design. Only the certificate columns (and what the caching
    headers need) are read."""
    return (
        CertificateAuthority.objects.only(
            "name",
            "certificate_der",
            "certificate_pem",
            "fingerprint_sha256",
            "created_at",
            "not_after",
        )
        .filter(name=name)
        .first()
    )


def ca_chain(*, ca: CertificateAuthority) -> list[CertificateAuthority]:
    """``ca`` and its ancestors, up to the root."""
    chain = [ca]
    while chain[-1].parent_id is not None and len(chain) < 16:
        chain.append(_cas().get(pk=chain[-1].parent_id))
    return chain


def ca_chain_pem(*, ca: CertificateAuthority) -> str:
    """The CA's certificate followed by its ancestors' (the trust bundle to install)."""
    return "".join(c.certificate_pem for c in ca_chain(ca=ca))


def ca_children(*, ca: CertificateAuthority) -> list[CertificateAuthority]:
    return list(_cas().filter(parent=ca).order_by("name"))


@dataclass(frozen=True)
class CADetail:
    ca: CertificateAuthority
    summary: CertificateSummary
    chain: list[CertificateAuthority]
    children: list[CertificateAuthority]
    recent: list[Certificate]
    issued_count: int
    crl_url: str
    ocsp_url: str
    ca_issuers_url: str
    timeline: list[AuditEvent]


def ca_detail(*, ca: CertificateAuthority) -> CADetail:
    """What the CA page shows: the decoded certificate, chain, children, recent issuance."""
    points = ca_distribution_points(ca.name)
    return CADetail(
        ca=ca,
        summary=_describe(ca.certificate_der),
        chain=ca_chain(ca=ca),
        children=ca_children(ca=ca),
        recent=list(_certificate_columns(Certificate.objects.filter(ca=ca)).order_by("-id")[:10]),
        issued_count=Certificate.objects.filter(ca=ca).count(),
        crl_url=points.crl,
        ocsp_url=points.ocsp,
        ca_issuers_url=points.ca_issuers,
        timeline=list(
            AuditEvent.objects.filter(
                target_type="pki.CertificateAuthority", target_id=str(ca.pk)
            ).order_by("-sequence")[:50]
        ),
    )


# --- certificates ----------------------------------------------------------------------------


def _describe(der: bytes | memoryview) -> CertificateSummary:
    return describe_certificate(x509.load_der_x509_certificate(bytes(der)))


def _certificate_columns(queryset: QuerySet[Certificate]) -> QuerySet[Certificate]:
    return queryset.select_related("ca").only(
        "id",
        "serial_hex",
        "subject",
        "sans",
        "profile",
        "public_key",
        "not_before",
        "not_after",
        "status",
        "revocation_reason",
        "source",
        "issued_at",
        "issued_by_name",
        "ca__name",
    )


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


# --- CRLs ------------------------------------------------------------------------------------

#: How many past CRLs the health page lists.
CRL_HISTORY = 10


@dataclass(frozen=True)
class CRLHealth:
    """What the CRL page of a CA shows, checked against the stored bytes themselves."""

    ca: CertificateAuthority
    latest: RevocationList | None
    #: None when there is no CRL; otherwise whether the stored bytes parse, are signed by the
    #: CA and say what the row says (number, entry count).
    signature_ok: bool | None
    problem: str
    age: timedelta | None
    remaining: timedelta | None
    #: "ok", "due" (past half its lifetime: `publish_crls` should have replaced it),
    #: "expired" (past nextUpdate: relying parties refuse it) or "missing".
    state: str
    history: list[RevocationList]
    responder: OCSPResponder | None
    crl_url: str
    ocsp_url: str
    now: datetime

    @property
    def pem_url(self) -> str:
        return self.crl_url.removesuffix(".crl") + ".pem"


def _check_stored_crl(der: bytes, ca: CertificateAuthority, row: RevocationList) -> str:
    """Empty if the stored CRL is sound, else what is wrong with it: the relying party's
    checks (RFC 5280 6.3.3, :func:`validate_crl`), then the row's own facts."""
    checked = validate_crl(
        der,
        issuer_certificate=x509.load_der_x509_certificate(bytes(ca.certificate_der)),
        now=row.this_update,
        read_entries=False,
    )
    if not checked.ok or checked.summary is None:
        return "the stored CRL cannot be relied on: " + "; ".join(checked.problems)
    summary = checked.summary
    if summary.crl_number != row.crl_number or summary.entry_count != row.entry_count:
        return (
            f"the CRL says number {summary.crl_number} with {summary.entry_count} entries, "
            f"the database {row.crl_number} with {row.entry_count}"
        )
    return ""


def crl_freshness_state(*, this_update: datetime, next_update: datetime, now: datetime) -> str:
    """A CRL's verdict: "expired" past nextUpdate, "due" past half its lifetime
    (`publish_crls` replaces it from then on, so a CRL still current after that means the
    scheduler is not running), else "ok"."""
    if next_update <= now:
        return "expired"
    if now >= this_update + (next_update - this_update) / 2:
        return "due"
    return "ok"


def crl_health(*, ca: CertificateAuthority) -> CRLHealth:
    """The current CRL of ``ca`` with its signature checked, its age and a verdict, the last
    few CRLs published, and the delegated OCSP responder."""
    now = timezone.now()
    history = list(
        RevocationList.objects.filter(ca=ca).defer("crl_der").order_by("-crl_number")[:CRL_HISTORY]
    )
    latest = (
        RevocationList.objects.filter(ca=ca, is_delta=False)
        .defer("crl_der")
        .order_by("-crl_number")
        .first()
    )
    signature_ok: bool | None = None
    problem = ""
    state = "missing"
    age = remaining = None
    if latest is not None:
        der = RevocationList.objects.filter(pk=latest.pk).values_list("crl_der", flat=True).get()
        problem = _check_stored_crl(bytes(der or b""), ca, latest)
        signature_ok = not problem
        age = now - latest.this_update
        remaining = latest.next_update - now
        state = crl_freshness_state(
            this_update=latest.this_update, next_update=latest.next_update, now=now
        )
    responder = (
        OCSPResponder.objects.select_related("certificate")
        .filter(ca=ca, not_after__gt=now, certificate__status=CertificateStatus.VALID)
        .order_by("-not_after")
        .first()
    )
    points = ca_distribution_points(ca.name)
    return CRLHealth(
        ca=ca,
        latest=latest,
        signature_ok=signature_ok,
        problem=problem,
        age=age,
        remaining=remaining,
        state=state,
        history=history,
        responder=responder,
        crl_url=points.crl,
        ocsp_url=points.ocsp,
        now=now,
    )


@dataclass(frozen=True)
class CRLFreshness:
    """One CA's newest CRL, for the dashboard (the CA's CRL page has the full check)."""

    ca_name: str
    crl_number: int | None
    this_update: datetime | None
    next_update: datetime | None
    remaining: timedelta | None  # negative once expired
    #: as on the CRL page: "ok", "due", "expired" or "missing" (see crl_freshness_state)
    state: str

    @property
    def flagged(self) -> bool:
        return self.state != "ok"


_CRL_STATE_ORDER = {"expired": 0, "missing": 1, "due": 2, "ok": 3}


def crl_freshness_list(*, user: User, now: datetime | None = None) -> list[CRLFreshness] | None:
    """Every CA's newest CRL and its verdict, worst first then soonest nextUpdate, for users
    who may see CAs (the CRL page's permission).

    One query: the CAs with their newest CRL's number and dates as correlated subqueries
    (each an index lookup on (ca, crl_number)); neither CRL bytes nor CA keys are read.
    """
    if not user.has_perm(VIEW_CA):
        return None
    now = now or timezone.now()
    newest = RevocationList.objects.filter(ca=OuterRef("pk"), is_delta=False).order_by(
        "-crl_number"
    )
    rows = (
        CertificateAuthority.objects.order_by("name")
        .annotate(
            newest_number=Subquery(newest.values("crl_number")[:1]),
            newest_this_update=Subquery(newest.values("this_update")[:1]),
            newest_next_update=Subquery(newest.values("next_update")[:1]),
        )
        .values_list("name", "newest_number", "newest_this_update", "newest_next_update")
    )
    result = []
    for name, number, this_update, next_update in rows:
        if number is None:
            result.append(CRLFreshness(name, None, None, None, None, "missing"))
            continue
        state = crl_freshness_state(this_update=this_update, next_update=next_update, now=now)
        result.append(
            CRLFreshness(name, number, this_update, next_update, next_update - now, state)
        )
    far = timedelta.max
    result.sort(
        key=lambda row: (
            _CRL_STATE_ORDER[row.state],
            row.remaining if row.remaining is not None else far,
        )
    )
    return result


# --- CA revocation requests (two-person rule, see pki.approvals) ---------------------------


def ca_of_certificate(*, certificate: Certificate) -> CertificateAuthority | None:
    """The intermediate CA in this portal whose certificate ``certificate`` is; None for any
    other certificate (its revocation needs no second approval)."""
    if certificate.profile != SUB_CA_PROFILE_NAME:
        return None
    return _cas().filter(parent_id=certificate.ca_id, serial_hex=certificate.serial_hex).first()


def ca_own_certificate(*, ca: CertificateAuthority) -> Certificate | None:
    """An intermediate CA's own certificate, as its parent issued it; None for a root."""
    if ca.parent_id is None:
        return None
    return (
        Certificate.objects.filter(ca_id=ca.parent_id, serial_hex=ca.serial_hex)
        .only("id", "ca_id", "serial_hex", "status", "profile")
        .first()
    )


def _ca_revocation_requests() -> QuerySet[CARevocationRequest]:
    return CARevocationRequest.objects.select_related("ca", "certificate", "certificate__ca").defer(
        "ca__sealed_private_key", "certificate__ca__sealed_private_key"
    )


@dataclass(frozen=True)
class PendingCARevocation:
    """A request as the approvals inbox shows it, with what approving it would revoke."""

    request: CARevocationRequest
    cas_below: list[str]
    certificates_below: int
    #: Why it can no longer be approved as it stands (e.g. revoked meanwhile), or "".
    problem: str


def ca_revocation_requests_pending(*, user: User) -> list[PendingCARevocation]:
    """Pending requests, oldest first, each with its impact as of now (the CAs and the
    certificates below); empty for users who may not see the inbox."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return []
    rows: list[PendingCARevocation] = []
    for request in (
        _ca_revocation_requests()
        .filter(status=CARevocationRequest.Status.PENDING)
        .order_by("requested_at", "id")
    ):
        try:
            preview = certificate_revocation_preview(
                certificate=request.certificate,
                reason=request.reason,
                invalidity_date=request.invalidity_date,
            )
        except PkiError as exc:
            rows.append(PendingCARevocation(request, [], 0, str(exc)))
        else:
            rows.append(
                PendingCARevocation(request, preview.cas_below, preview.certificates_below, "")
            )
    return rows


def ca_revocation_request_get(*, user: User, pk: int) -> CARevocationRequest | None:
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return None
    return _ca_revocation_requests().filter(pk=pk).first()


def ca_revocation_requests_of(*, user: User, certificate: Certificate) -> list[CARevocationRequest]:
    """The latest requests to revoke this CA certificate (for its and its CA's page)."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return []
    return list(_ca_revocation_requests().filter(certificate_id=certificate.pk)[:5])


def ca_revocation_summary(*, user: User, now: datetime | None = None) -> ApprovalSummary | None:
    """Pending CA revocation requests for users who may see the inbox; one aggregate query."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return None
    return pending_summary(
        CARevocationRequest,
        user=user,
        can_approve=user.has_perm(REVOKE),
        now=now or timezone.now(),
    )
