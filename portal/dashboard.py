"""The portal's dashboard: per role, the numbers worth acting on, each a link to the list
page filtered to exactly what it counts.

Every number comes from the owning app's selectors, which take the user and decide who sees
what; a section appears only when the user holds the permission of the list page behind it
(the selector answers None otherwise). Each section costs one or two aggregate queries,
whatever the size of the tables: nothing is loaded to be counted.

The expiry chart is an inline SVG drawn here on the server: no script, no style attribute
(the Content-Security-Policy allows the project's stylesheet only), presentation attributes
and portal.css classes; it scales with its viewBox, and a table holds the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.generic import TemplateView

from accounts.roles import Role
from accounts.selectors import dashboard_user_counts
from audit.models import AuditEvent, Outcome
from audit.selectors import EventFilters, audit_event_queryset
from kmsportal.mixins import AuthenticatedRequest, SignedInMixin
from kmsportal.two_person import pending_summary, two_person_kinds
from pki.selectors import (
    CertificateOverview,
    CRLFreshness,
    ExpiryWindow,
    ca_revocation_summary,
    certificate_overview,
    crl_freshness_list,
)
from vault.lifecycle import KeyState
from vault.selectors import destruction_request_summary, key_summary

#: Keys whose rotation falls due within this many days are shown next to the overdue ones.
ROTATION_DUE_SOON_DAYS = 7
RECENT_EVENTS = 10
#: Denied events are counted over this window (the audit list's `since` filter).
DENIED_WINDOW = timedelta(hours=24)
#: The expiry chart: 13 weeks from today (UTC), one bar each.
EXPIRY_WINDOWS = 13
EXPIRY_WINDOW_DAYS = 7
AUDIT_PERMISSION = "audit.view_auditevent"  # the audit list's permission
#: Who sees the public-URL warnings (administrators: they manage CAs and the deployment).
PUBLIC_URL_PERMISSION = "pki.manage_certificateauthority"


def _link(url_name: str, **query: str | int) -> str:
    """The list page's address with its filter parameters, as its filter form reads them."""
    base = reverse(url_name)
    return f"{base}?{urlencode(query)}" if query else base


@dataclass(frozen=True)
class Stat:
    """One number and the list it counts. ``tone`` ("warn", "bad") highlights a non-zero
    number that asks for action."""

    label: str
    value: int
    href: str
    tone: str = ""

    @property
    def alert(self) -> bool:
        return bool(self.tone and self.value)


# --- keys and approvals --------------------------------------------------------------------


@dataclass(frozen=True)
class KeysSection:
    total: Stat
    attention: list[Stat]
    states: list[Stat]


def _keys_section(user: User, now: datetime) -> KeysSection | None:
    summary = key_summary(user=user, now=now, due_within_days=ROTATION_DUE_SOON_DAYS)
    if summary is None:
        return None
    days = summary.due_within_days
    return KeysSection(
        total=Stat("keys in all", summary.total, _link("vault:key_list")),
        attention=[
            Stat(
                "overdue for rotation",
                summary.rotation_overdue,
                _link("vault:key_list", overdue="on"),
                "bad",
            ),
            Stat(
                f"rotation due in the next {days} days",
                summary.rotation_due_soon,
                _link("vault:key_list", due_within=days),
                "warn",
            ),
            Stat(
                "pending destruction",
                summary.by_state[KeyState.PENDING_DESTRUCTION],
                _link("vault:key_list", state=KeyState.PENDING_DESTRUCTION.value),
                "warn",
            ),
        ],
        states=[
            Stat(
                state.label,
                summary.by_state[state.value],
                _link("vault:key_list", state=state.value),
                "bad" if state == KeyState.COMPROMISED else "",
            )
            for state in KeyState
        ],
    )


@dataclass(frozen=True)
class ApprovalsSection:
    """Both two-person rules: key destruction (vault) and CA revocation (pki). Each part is
    None for a user who may not see that inbox; the section needs one of them."""

    waiting: Stat | None  # destruction requests
    expired: int
    approvable: int  # requests the user may approve now (not their own, not expired)
    ca_revocations: Stat | None = None  # CA revocation requests
    ca_expired: int = 0
    ca_approvable: int = 0
    # The other two-person kinds (key grants, export policies, re-enrollment, role grants).
    others: tuple[Stat, ...] = ()
    others_approvable: int = 0
    inbox: str = ""

    @property
    def stats(self) -> list[Stat]:
        pair = [stat for stat in (self.waiting, self.ca_revocations) if stat is not None]
        return pair + list(self.others)

    @property
    def any_approvable(self) -> int:
        return self.approvable + self.ca_approvable + self.others_approvable

    @property
    def any_waiting(self) -> int:
        return sum(stat.value for stat in self.stats)


def _other_approvals(user: User, now: datetime) -> tuple[list[Stat], int]:
    """The two-person kinds beyond destruction and CA revocation, one aggregate each."""
    stats: list[Stat] = []
    approvable = 0
    for kind in two_person_kinds():
        if kind.slug in ("destruction", "ca-revocation") or not user.has_perm(kind.visible):
            continue
        summary = pending_summary(
            kind.model, user=user, can_approve=user.has_perm(kind.permission), now=now
        )
        stats.append(
            Stat(
                f"{kind.label} requests waiting",
                summary.waiting,
                _link("approvals:inbox", kind=kind.slug),
                "warn",
            )
        )
        approvable += summary.approvable
    return stats, approvable


def _approvals_section(user: User, now: datetime) -> ApprovalsSection | None:
    destruction = destruction_request_summary(user=user, now=now)
    revocation = ca_revocation_summary(user=user, now=now)
    others, others_approvable = _other_approvals(user, now)
    if destruction is None and revocation is None and not others:
        return None
    return ApprovalsSection(
        others=tuple(others),
        others_approvable=others_approvable,
        inbox=_link("approvals:inbox"),
        waiting=(
            Stat(
                "destruction requests waiting for a second custodian",
                destruction.waiting,
                _link("vault:approvals"),
                "warn",
            )
            if destruction is not None
            else None
        ),
        expired=destruction.expired if destruction is not None else 0,
        approvable=destruction.approvable if destruction is not None else 0,
        ca_revocations=(
            Stat(
                "CA revocations waiting for a second CA operator",
                revocation.waiting,
                _link("pki:ca_revocation_approvals"),
                "warn",
            )
            if revocation is not None
            else None
        ),
        ca_expired=revocation.expired if revocation is not None else 0,
        ca_approvable=revocation.approvable if revocation is not None else 0,
    )


# --- certificates and the expiry chart -----------------------------------------------------


@dataclass(frozen=True)
class ChartBar:
    """One window's bar, in the chart's user units (see ExpiryChart)."""

    window: ExpiryWindow
    href: str
    label: str  # what a screen reader says for the bar's link
    slot_x: float  # the bar's whole column, which is the link's target area
    x: float
    width: float
    y: float
    height: float
    center: float
    show_date: bool  # every other bar carries its first day under the axis

    @property
    def count_y(self) -> float:
        """Where the count sits: just above the bar."""
        return round(self.y - 5, 1)


@dataclass(frozen=True)
class ExpiryChart:
    """Bars on a fixed viewBox; the SVG is as wide as its card and keeps its proportions.

    About 400 x 210 units: at a phone's width the text stays legible (portal.css enlarges
    it there), on a desktop the card caps the chart's width.
    """

    WIDTH = 400
    HEIGHT = 210
    LEFT = 5
    PITCH = 30  # one window: bar plus gap
    BAR = 22
    TOP = 22  # room for the count above the tallest bar
    BASELINE = 172

    bars: list[ChartBar]
    peak: int

    @property
    def view_box(self) -> str:
        return f"0 0 {self.WIDTH} {self.HEIGHT}"

    @property
    def axis_end(self) -> int:
        return self.LEFT + self.PITCH * len(self.bars)

    @property
    def date_y(self) -> int:
        return self.BASELINE + 16

    @property
    def total(self) -> int:
        return sum(bar.window.count for bar in self.bars)

    @property
    def first_day(self) -> date:
        return self.bars[0].window.start

    @property
    def last_day(self) -> date:
        return self.bars[-1].window.last_day


def _window_label(window: ExpiryWindow) -> str:
    noun = "certificate" if window.count == 1 else "certificates"
    return (
        f"{window.count} valid {noun} expiring {window.start:%Y-%m-%d} to "
        f"{window.last_day:%Y-%m-%d} (UTC)"
    )


def expiry_chart(windows: list[ExpiryWindow]) -> ExpiryChart:
    """Bar geometry for ``windows``; every bar links to the list filtered to its window."""
    peak = max((w.count for w in windows), default=0)
    room = ExpiryChart.BASELINE - ExpiryChart.TOP
    bars = []
    for i, window in enumerate(windows):
        # A window without certificates keeps a sliver on the axis, so every week has a bar.
        height = max(2.0, round(room * window.count / peak, 1)) if window.count else 1.0
        slot_x = ExpiryChart.LEFT + i * ExpiryChart.PITCH
        x = slot_x + (ExpiryChart.PITCH - ExpiryChart.BAR) / 2
        bars.append(
            ChartBar(
                window=window,
                href=_link(
                    "pki:certificate_list",
                    status="valid",
                    validity="unexpired",
                    expires_after=window.start.isoformat(),
                    expires_before=window.end.isoformat(),
                ),
                label=_window_label(window),
                slot_x=slot_x,
                x=x,
                width=ExpiryChart.BAR,
                y=ExpiryChart.BASELINE - height,
                height=height,
                center=x + ExpiryChart.BAR / 2,
                show_date=i % 2 == 0,
            )
        )
    return ExpiryChart(bars=bars, peak=peak)


@dataclass(frozen=True)
class CertificatesSection:
    totals: list[Stat]
    chart: ExpiryChart


def _certificates_section(user: User, now: datetime) -> CertificatesSection | None:
    overview: CertificateOverview | None = certificate_overview(
        user=user, now=now, windows=EXPIRY_WINDOWS, window_days=EXPIRY_WINDOW_DAYS
    )
    if overview is None:
        return None
    return CertificatesSection(
        totals=[
            Stat(
                "valid",
                overview.valid,
                _link("pki:certificate_list", status="valid", validity="unexpired"),
            ),
            Stat(
                "expiring in 30 days",
                overview.expiring_30,
                _link("pki:certificate_list", expiring=30),
                "bad",
            ),
            Stat(
                "expiring in 90 days",
                overview.expiring_90,
                _link("pki:certificate_list", expiring=90),
                "warn",
            ),
            Stat(
                "expired (not revoked)",
                overview.expired,
                _link("pki:certificate_list", status="valid", validity="expired"),
            ),
            Stat("revoked", overview.revoked, _link("pki:certificate_list", status="revoked")),
        ],
        chart=expiry_chart(overview.windows),
    )


# --- CRLs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CRLRow:
    freshness: CRLFreshness
    href: str  # the CA's CRL page


@dataclass(frozen=True)
class CRLSection:
    rows: list[CRLRow]
    flagged: int


def _crl_section(user: User, now: datetime) -> CRLSection | None:
    freshness = crl_freshness_list(user=user, now=now)
    if freshness is None:
        return None
    rows = [CRLRow(f, reverse("pki:crl_health", args=[f.ca_name])) for f in freshness]
    return CRLSection(rows=rows, flagged=sum(1 for row in rows if row.freshness.flagged))


# --- audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditSection:
    recent: list[AuditEvent]
    denied: Stat
    since: datetime


def _audit_section(user: User, now: datetime) -> AuditSection | None:
    if not user.has_perm(AUDIT_PERMISSION):
        return None
    # Whole seconds: the link carries this instant, and the list must count the same events.
    since = (now - DENIED_WINDOW).astimezone(UTC).replace(microsecond=0)
    recent = list(
        audit_event_queryset(user=user, filters=EventFilters()).only(
            "sequence", "time", "actor_type", "actor_name", "action", "outcome"
        )[:RECENT_EVENTS]
    )
    denied = audit_event_queryset(
        user=user, filters=EventFilters(outcome=Outcome.DENIED, since=since)
    ).count()
    return AuditSection(
        recent=recent,
        denied=Stat(
            "denied in the last 24 hours",
            denied,
            _link(
                "audit:event_list",
                outcome=Outcome.DENIED.value,
                since=since.strftime("%Y-%m-%dT%H:%M:%S"),
            ),
            "bad",
        ),
        since=since,
    )


# --- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsersSection:
    total: Stat
    active: Stat
    inactive: Stat
    by_role: list[Stat]
    master_keys: int | None


def _plural_in_sentence(label: str) -> str:
    """ "Key custodian" -> "key custodians", "CA operator" -> "CA operators" (acronyms stay)."""
    first, _, rest = label.partition(" ")
    if not first.isupper():
        first = first.lower()
    return f"{first} {rest}s" if rest else f"{first}s"


def _users_section(user: User) -> UsersSection | None:
    counts = dashboard_user_counts(user=user)
    if counts is None:
        return None
    return UsersSection(
        total=Stat("users", counts.total, _link("accounts:user_list")),
        active=Stat("active", counts.active, _link("accounts:user_list", status="active")),
        inactive=Stat("inactive", counts.inactive, _link("accounts:user_list", status="inactive")),
        by_role=[
            Stat(
                f"active {_plural_in_sentence(role.label)}",
                counts.by_role[role.value],
                _link("accounts:user_list", role=role.value),
            )
            for role in Role
        ],
        master_keys=counts.master_keys,
    )


def dashboard_sections(*, user: User, now: datetime | None = None) -> dict[str, Any]:
    """Every section the user may see (absent ones are None), all as of the same `now`."""
    now = now or timezone.now()
    return {
        "keys": _keys_section(user, now),
        "approvals": _approvals_section(user, now),
        "certificates": _certificates_section(user, now),
        "crls": _crl_section(user, now),
        "audit": _audit_section(user, now),
        "users": _users_section(user),
        "now": now,
    }


class DashboardView(SignedInMixin, TemplateView):
    """Every signed-in user's start page; what it shows depends on their permissions."""

    request: AuthenticatedRequest  # TemplateResponseMixin declares it too

    template_name = "portal/dashboard.html"

    def get_context_data(self, **kwargs: object) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # The user's roles are in every page's context already (nav_roles).
        context.update(dashboard_sections(user=self.request.user))
        if self.request.user.has_perm(PUBLIC_URL_PERMISSION):
            from .public_url import public_url_warnings

            context["public_url_warnings"] = public_url_warnings(self.request)
        return context
