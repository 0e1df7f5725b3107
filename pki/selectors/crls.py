"""CRL health and freshness, for the CRL pages and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from django.contrib.auth.models import User
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from kmsportal.crypto.crl import validate_crl

from ..distribution import ca_distribution_points
from ..models import (
    CertificateAuthority,
    CertificateStatus,
    OCSPResponder,
    RevocationList,
)
from .cas import (
    VIEW_CA,
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
