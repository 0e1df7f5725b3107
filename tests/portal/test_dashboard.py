"""The dashboard through real HTTP: the sections each role sees, numbers that match data made
through the services, links that list exactly what they count, the server-drawn expiry
chart, and a query count that does not grow with the data.

The only direct writes move a deadline into the past (a rotation, a certificate's notAfter,
a CRL's update times), as the vault and PKI tests do: time cannot be made to pass otherwise.
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate, CertificateAuthority, RevocationList
from portal.dashboard import EXPIRY_WINDOWS
from tests.factories import approver_make
from tests.pki.conftest import csr_pem, ec_key, issuing, root  # noqa: F401 - fixtures
from vault import services as vault_services
from vault.models import SymmetricKey

pytestmark = pytest.mark.django_db

SECTIONS = (
    "dash-keys",
    "dash-approvals",
    "dash-crls",
    "dash-certificates",
    "dash-users",
    "dash-audit",
)
SEES = {
    Role.ADMINISTRATOR: set(SECTIONS),
    Role.AUDITOR: set(SECTIONS),
    Role.KEY_CUSTODIAN: {"dash-keys", "dash-approvals"},
    Role.CA_OPERATOR: {"dash-approvals", "dash-crls", "dash-certificates"},
}


class _Links(HTMLParser):
    """Every link of the page's <main>, with the number it claims to count (data-count)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside_main = False
        self.links: list[tuple[str, int | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "main":
            self.inside_main = True
        elif tag == "a" and self.inside_main:
            values = dict(attrs)
            count = values.get("data-count")
            self.links.append((values["href"] or "", None if count is None else int(count)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "main":
            self.inside_main = False


def links_of(response) -> list[tuple[str, int | None]]:
    parser = _Links()
    parser.feed(response.content.decode())
    return parser.links


def sections_of(response) -> set[str]:
    return set(
        re.findall(r'<section [^>]*aria-labelledby="(dash-[a-z]+)"', response.content.decode())
    )


def listed(client: Client, href: str) -> int:
    """How many objects the list page at ``href`` shows (all on one page here)."""
    response = client.get(href)
    assert response.status_code == 200, href
    path = urlsplit(href).path
    context = response.context
    if path == "/keys/":
        page = context["page"]
        assert page.next_cursor is None
        return len(page.keys)
    if path == "/pki/certificates/":
        page = context["page"]
        assert page.next_cursor is None
        return len(page.certificates)
    if path == "/audit/":
        page = context["page"]
        assert page.older_cursor is None
        return len(page.events)
    if path == "/keys/approvals/":
        return len(context["requests"])
    if path == "/pki/revocations/":
        return len(context["rows"])
    if path == "/approvals/":
        return sum(len(section["rows"]) for section in context["sections"])
    if path == "/users/":
        return context["paginator"].count
    raise AssertionError(f"no list page known at {href}")


def stat_values(stats) -> dict[str, int]:
    return {stat.label: stat.value for stat in stats}


# --- data made through the services ----------------------------------------------------------


@dataclass
class Estate:
    first: User  # a key custodian who asked for a destruction
    second: User  # another key custodian, who may approve it
    first_client: Client
    second_client: Client


@pytest.fixture
def estate(make_user, signed_in, issuing, root, ec_key) -> Estate:  # noqa: F811
    """Keys in every live state, a pending two-person request, certificates expiring over
    the coming months (one revoked, one expired), CRLs ok / due / expired, denied events."""
    first = make_user("kim-custodian", Role.KEY_CUSTODIAN)
    second = approver_make("lou-custodian", Role.KEY_CUSTODIAN)
    now = timezone.now()

    create = vault_services.symmetric_key_create
    create(actor=first, name="steady", rotation_period_days=90)
    create(actor=first, name="soon", rotation_period_days=3)
    late = create(actor=first, name="late", rotation_period_days=1)
    SymmetricKey.objects.filter(pk=late.pk).update(next_rotation_at=now - timedelta(hours=1))
    vault_services.symmetric_key_suspend(actor=first, key=create(actor=first, name="paused"))
    vault_services.symmetric_key_deactivate(actor=first, key=create(actor=first, name="retired"))
    vault_services.symmetric_key_compromise(
        actor=first, key=create(actor=first, name="leaked"), reason="found in a log"
    )
    create(actor=first, name="future", activate_at=now + timedelta(days=1))
    doomed = create(actor=first, name="doomed")
    request = vault_services.destruction_request_create(
        actor=first, key=doomed, waiting_days=7, reason="retired"
    )
    vault_services.destruction_request_approve(actor=second, request=request)
    vault_services.destruction_request_create(
        actor=first, key=create(actor=first, name="waiting"), waiting_days=7, reason="unused"
    )

    def issue(days: int) -> Certificate:
        return pki_services.certificate_issue_from_csr(
            actor=None,
            ca=issuing,
            csr_pem_or_der=csr_pem(ec_key, subject=f"CN=in-{days}-days.example.org"),
            profile="tls-server",
            days=days,
        )

    for days in (5, 20, 40, 80, 200):
        issue(days)
    pki_services.certificate_revoke(actor=None, certificate=issue(25), reason="superseded")
    expired = issue(10)
    Certificate.objects.filter(pk=expired.pk).update(
        not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    legacy = pki_services.certificate_authority_create(
        actor=None, name="legacy", subject="CN=Legacy CA", parent=root, key_type="ecp256"
    )
    # root: past half its lifetime ("due"); legacy: past nextUpdate ("expired").
    RevocationList.objects.filter(ca=root).update(
        this_update=now - timedelta(days=5), next_update=now + timedelta(days=2)
    )
    RevocationList.objects.filter(ca=legacy).update(
        this_update=now - timedelta(days=8), next_update=now - timedelta(days=1)
    )

    first_client, second_client = signed_in(first), signed_in(second)
    for _ in range(2):  # custodians may not read the audit log: two denied events
        assert first_client.get("/audit/").status_code == 403
    return Estate(first, second, first_client, second_client)


# --- who sees what ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_each_role_sees_its_sections_only(role_client, role: Role) -> None:
    response = role_client(role).get("/")
    assert response.status_code == 200
    assert sections_of(response) == SEES[role]
    for name in ("keys", "approvals", "crls", "certificates", "users", "audit"):
        assert (response.context[name] is not None) is (f"dash-{name}" in SEES[role]), name


def test_a_custodian_sees_no_pki_or_audit_numbers(estate: Estate) -> None:
    page = estate.first_client.get("/").content.decode()
    assert 'href="/pki/' not in page and 'href="/audit/' not in page and "<svg" not in page
    assert 'href="/keys/?state=active"' in page


def test_a_ca_operator_sees_no_vault_numbers(estate: Estate, role_client) -> None:
    page = role_client(Role.CA_OPERATOR).get("/").content.decode()
    assert 'href="/keys/' not in page and 'href="/audit/' not in page
    assert "<svg" in page and 'href="/pki/cas/legacy/crl/"' in page


def test_anonymous_is_sent_to_sign_in(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# --- numbers and links -----------------------------------------------------------------------


def test_numbers_match_the_data(estate: Estate, admin_user: User, signed_in) -> None:
    context = signed_in(admin_user).get("/").context

    keys = context["keys"]
    assert keys.total.value == 9
    assert stat_values(keys.attention) == {
        "overdue for rotation": 1,
        "rotation due in the next 7 days": 1,
        "pending destruction": 1,
    }
    assert stat_values(keys.states) == {
        "pre-active": 1,
        "active": 4,  # steady, soon, late, waiting
        "suspended": 1,
        "deactivated": 1,
        "compromised": 1,
        "pending destruction": 1,
        "destroyed": 0,
        "destroyed (compromised)": 0,
    }

    approvals = context["approvals"]
    assert approvals.waiting.value == 1 and approvals.expired == 0
    assert approvals.approvable == 0  # administrators read requests; custodians decide
    assert approvals.ca_revocations.value == 0 and approvals.ca_approvable == 0

    totals = stat_values(context["certificates"].totals)
    everything = Certificate.objects.count()
    assert totals["expiring in 30 days"] == 2  # 5 and 20 days
    assert totals["expiring in 90 days"] == 4  # and 40 and 80 days
    assert totals["revoked"] == 1 and totals["expired (not revoked)"] == 1
    assert totals["valid"] == everything - 2  # the CAs' own certificates are valid too
    chart = context["certificates"].chart
    assert len(chart.bars) == EXPIRY_WINDOWS
    assert chart.total == 4  # 5, 20, 40 and 80 days; 200 days is past the 13 weeks

    crls = {row.freshness.ca_name: row.freshness for row in context["crls"].rows}
    assert {name: f.state for name, f in crls.items()} == {
        "legacy": "expired",
        "root": "due",
        "issuing": "ok",
    }
    assert [row.freshness.ca_name for row in context["crls"].rows] == ["legacy", "root", "issuing"]
    assert context["crls"].flagged == 2
    # The revocation published a delta CRL; the complete CRL is still the first.
    assert crls["issuing"].crl_number == 1

    audit = context["audit"]
    assert audit.denied.value == 2
    newest = list(AuditEvent.objects.order_by("-sequence")[:10])
    assert [e.sequence for e in audit.recent] == [e.sequence for e in newest]

    users = context["users"]
    assert users.total.value == User.objects.count() == 3
    assert users.active.value == 3 and users.inactive.value == 0
    by_role = {stat.label: stat.value for stat in users.by_role}
    assert by_role["active key custodians"] == 2
    assert by_role["active administrators"] == 1


def test_every_link_lists_exactly_what_it_counts(
    estate: Estate, admin_user: User, signed_in
) -> None:
    client = signed_in(admin_user)
    response = client.get("/")
    links = links_of(response)
    counted = [(href, count) for href, count in links if count is not None]
    # keys: total, 3 highlights, 8 states; approvals (destructions, CA revocations, and key
    # grants, export policies, re-enrollments, role grants, administrator removals); 5
    # certificate totals; 13 bars
    # and the same 13 in the table; users (total, active, inactive, 4 roles); denied events.
    assert len(counted) == 1 + 3 + 8 + 2 + 5 + 5 + 2 * EXPIRY_WINDOWS + 7 + 1
    for href, count in counted:
        assert listed(client, href) == count, href
    others = [href for href, count in links if count is None]
    assert {"/pki/cas/root/crl/", "/pki/cas/issuing/crl/", "/pki/cas/legacy/crl/"} <= set(others)
    assert sum(href.startswith("/audit/events/") for href in others) == 10
    for href in others:
        assert client.get(href).status_code == 200, href


def test_the_denied_link_lists_the_last_24_hours(estate: Estate, admin_user, signed_in) -> None:
    client = signed_in(admin_user)
    (href,) = [h for h, _ in links_of(client.get("/")) if "outcome=denied" in h]
    query = parse_qs(urlsplit(href).query)
    since = datetime.fromisoformat(query["since"][0]).replace(tzinfo=UTC)
    assert timedelta(hours=24) <= timezone.now() - since < timedelta(hours=24, minutes=1)
    events = client.get(href).context["page"].events
    assert {e.action for e in events} == {"access.denied"}
    assert {e.actor_name for e in events} == {"kim-custodian"}


def test_key_links_name_the_filters(estate: Estate) -> None:
    hrefs = {h for h, _ in links_of(estate.first_client.get("/"))}
    assert {
        "/keys/",
        "/keys/?overdue=on",
        "/keys/?due_within=7",
        "/keys/?state=pending_destruction",
        "/keys/?state=compromised",
        "/keys/approvals/",
    } <= hrefs


# --- two-person approvals ----------------------------------------------------------------------


def test_approvals_are_highlighted_for_the_custodian_who_may_approve(
    estate: Estate, role_client
) -> None:
    asker = estate.first_client.get("/")
    assert asker.context["approvals"].approvable == 0
    assert "dash-attention" not in asker.content.decode()
    approver = estate.second_client.get("/")
    assert approver.context["approvals"].approvable == 1
    page = html.unescape(approver.content.decode())
    assert "dash-attention" in page and "1 waits for you:" in page
    auditor = role_client(Role.AUDITOR).get("/")
    assert auditor.context["approvals"].waiting.value == 1
    assert auditor.context["approvals"].approvable == 0


def test_an_expired_request_is_not_offered_for_approval(estate: Estate) -> None:
    from vault.models import DestructionRequest

    DestructionRequest.objects.filter(status="pending").update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    approvals = estate.second_client.get("/").context["approvals"]
    assert (approvals.waiting.value, approvals.expired, approvals.approvable) == (1, 1, 0)


def _ca_revocation_asked(asker: User, ca: CertificateAuthority) -> None:
    from pki.approvals import ca_revocation_request

    ca_revocation_request(
        actor=asker,
        certificate=Certificate.objects.get(ca=ca.parent, serial_hex=ca.serial_hex),
        reason="superseded",
        comment="no longer needed",
    )


def test_ca_revocations_are_highlighted_for_the_operator_who_may_approve(
    make_user,
    signed_in,
    role_client,
    issuing,  # noqa: F811
) -> None:
    asker = make_user("olga-operator", Role.CA_OPERATOR)
    _ca_revocation_asked(asker, issuing)
    own = signed_in(asker).get("/")
    approvals = own.context["approvals"]
    assert approvals.waiting is None  # CA operators see no key destructions
    assert (approvals.ca_revocations.value, approvals.ca_approvable) == (1, 0)
    assert "dash-attention" not in own.content.decode()
    assert "you asked for them, or they expired" in own.content.decode()

    second = signed_in(make_user("omar-operator", Role.CA_OPERATOR)).get("/")
    assert second.context["approvals"].ca_approvable == 1
    page = html.unescape(second.content.decode())
    assert "dash-attention" in page and "1 CA revocation waits for you:" in page
    assert ("/pki/revocations/", 1) in links_of(second)

    auditor = role_client(Role.AUDITOR).get("/").context["approvals"]
    assert (auditor.ca_revocations.value, auditor.ca_approvable) == (1, 0)
    administrator = role_client(Role.ADMINISTRATOR).get("/").context["approvals"]
    assert (administrator.ca_revocations.value, administrator.ca_approvable) == (1, 0)
    custodian = role_client(Role.KEY_CUSTODIAN).get("/").context["approvals"]
    assert custodian.ca_revocations is None


def test_an_expired_ca_revocation_is_not_offered_for_approval(
    make_user,
    signed_in,
    issuing,  # noqa: F811
) -> None:
    from pki.models import CARevocationRequest

    _ca_revocation_asked(make_user("olga-operator", Role.CA_OPERATOR), issuing)
    CARevocationRequest.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    response = signed_in(make_user("omar-operator", Role.CA_OPERATOR)).get("/")
    approvals = response.context["approvals"]
    assert (approvals.ca_revocations.value, approvals.ca_expired, approvals.ca_approvable) == (
        1,
        1,
        0,
    )
    assert "can only be rejected or withdrawn" in response.content.decode()


# --- CRLs --------------------------------------------------------------------------------------


def test_a_ca_without_a_crl_is_flagged_missing(role_client, root) -> None:  # noqa: F811
    RevocationList.objects.filter(ca=root).delete()  # a CA from before CRLs were published
    response = role_client(Role.CA_OPERATOR).get("/")
    (row,) = response.context["crls"].rows
    assert row.freshness.state == "missing" and row.freshness.flagged
    assert "no CRL published yet" in response.content.decode()


# --- the chart ----------------------------------------------------------------------------------


def test_the_chart_is_inline_svg_without_style_or_script(
    estate: Estate, admin_user, signed_in
) -> None:
    response = signed_in(admin_user).get("/")
    page = response.content.decode()
    assert "style-src 'self'" in response["Content-Security-Policy"]
    assert "style=" not in page and "<style" not in page and "<script" not in page
    (svg,) = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    assert 'viewBox="0 0 400 210"' in svg and 'width="100%"' in svg
    assert svg.count('class="dash-chart-bar') == EXPIRY_WINDOWS
    assert svg.count('<a class="dash-chart-link" href="/pki/certificates/?') == EXPIRY_WINDOWS
    assert svg.count("<title") == 1 + EXPIRY_WINDOWS and "<desc" in svg
    assert 'aria-labelledby="expiry-chart-title expiry-chart-desc"' in svg
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', svg)]
    assert len(counts) == EXPIRY_WINDOWS and sum(counts) == 4
    bars = response.context["certificates"].chart.bars
    assert all(b.window.end == b.window.start + timedelta(days=7) for b in bars)
    assert all(a.window.end == b.window.start for a, b in itertools.pairwise(bars))
    tallest = max(bars, key=lambda b: b.window.count)
    assert tallest.height == pytest.approx(150)
    # The same numbers for screen readers, as a table.
    (table,) = re.findall(r"<details class=\"dash-details\">.*?</details>", page, flags=re.S)
    assert table.count("<tr>") == 1 + EXPIRY_WINDOWS


def test_an_empty_pki_still_draws_every_week(role_client) -> None:
    response = role_client(Role.CA_OPERATOR).get("/")
    chart = response.context["certificates"].chart
    assert len(chart.bars) == EXPIRY_WINDOWS and chart.total == 0
    assert response.content.decode().count('class="dash-chart-bar is-empty"') == EXPIRY_WINDOWS
    assert response.context["crls"].rows == []


# --- cost --------------------------------------------------------------------------------------


def queries_of(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


#: The dashboard's own queries for a user who sees every section: keys, approvals (key
#: destructions, CA revocations, and one aggregate for each of the five other two-person
#: kinds), certificates, CRLs, audit (recent events, denied count), users (totals, per
#: role) and the master key count; for administrators, the public-URL check (the
#: intermediate CAs' and the key server's certificates: one query each).
DASHBOARD_QUERIES = 17


def test_queries_do_not_grow_with_the_data(
    estate: Estate,
    admin_user,
    signed_in,
    django_assert_max_num_queries,
    ec_key,  # noqa: F811
) -> None:
    client = signed_in(admin_user)
    client.get("/")
    # What every signed-in page costs (session, user, permissions, navigation) is measured
    # on a page without numbers, so that only the dashboard's own queries are bounded here.
    baseline = queries_of(client, "/accounts/password/")
    with django_assert_max_num_queries(baseline + DASHBOARD_QUERIES):
        assert client.get("/").status_code == 200
    for i in range(25):
        vault_services.symmetric_key_create(
            actor=None, name=f"more-{i:02d}", rotation_period_days=2
        )
    ca = CertificateAuthority.objects.get(name="issuing")
    for days in range(1, 90, 9):
        pki_services.certificate_issue_from_csr(
            actor=None, ca=ca, csr_pem_or_der=csr_pem(ec_key), profile="tls-server", days=days
        )
    pki_services.certificate_authority_create(
        actor=None, name="another", subject="CN=Another CA", key_type="ecp256"
    )
    with django_assert_max_num_queries(baseline + DASHBOARD_QUERIES):
        assert client.get("/").status_code == 200
