"""Every list page on a phone (390 px): screenshotted, no sideways scrolling, each row a card
whose cells are all on screen, and codes that never break mid-token; the one-time codes
(recovery codes, an invitation link, an enrollment token) on one line each.

The data is what makes lists hard to read on a narrow screen: long subjects and SANs,
40-digit serials, long descriptions, dotted event codes, many rows.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import User

from accounts.roles import Role
from adminapi.tokens import api_token_create
from notifications.services import watcher_add
from pki import services as pki_services
from tests.browser.journeys import PHONE, assert_no_sideways_scroll, expect
from vault import clients
from vault import services as vault_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

VIEWER = "petra-phone"
LIST_PAGES = {
    "users": "/users/",
    "keys": "/keys/",
    "clients": "/clients/",
    "cas": "/pki/",
    "certificates": "/pki/certificates/",
    "ca-revocation-approvals": "/pki/revocations/",
    "audit-log": "/audit/",
    "approvals": "/approvals/",
    "key-destruction-approvals": "/keys/approvals/",
    "api-tokens": "/accounts/api-tokens/",
    "expiry-watchers": "/notifications/watchers/",
    "crl-status": "/pki/cas/phone-issuing-ca-with-a-long-name/crl/",
}
CUSTODIAN = "kristina-custodian-with-a-long-name"


def csr(host: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host), x509.DNSName(f"very-long-service-name-{host}")]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.fixture
def busy_portal(make_user) -> None:
    make_user(VIEWER, Role.ADMINISTRATOR, Role.AUDITOR)
    viewer = User.objects.get(username=VIEWER)
    custodian = make_user(CUSTODIAN, Role.KEY_CUSTODIAN)
    root = pki_services.certificate_authority_create(
        actor=None, name="phone-root", subject="CN=Phone Root CA,O=Example Org", key_type="ecp256"
    )
    issuing = pki_services.certificate_authority_create(
        actor=None,
        name="phone-issuing-ca-with-a-long-name",
        subject="CN=Phone Issuing CA for the payments department,O=Example Organisation Ltd",
        parent=root,
        key_type="ecp256",
    )
    for i in range(4):
        pki_services.certificate_issue_from_csr(
            actor=None,
            ca=issuing,
            csr_pem_or_der=csr(f"api-{i}.payments.internal.example.org"),
            profile="tls-server",
        )
    key = vault_services.symmetric_key_create(
        actor=custodian,
        name="payments-database-encryption-key",
        description="Encrypts the payments database columns holding card tokens",
        rotation_period_days=90,
    )
    vault_services.symmetric_key_rotate(actor=custodian, key=key)
    client, _ = clients.client_create(
        actor=custodian, name="billing-batch-exporter", description="Nightly export to the ledger"
    )
    clients.grant_create(actor=custodian, client=client, key=key)
    # A destruction waiting for a second custodian (the approvals pages), CRLs published
    # (the CRL status page), an API token and expiry watchers.
    retired = vault_services.symmetric_key_create(
        actor=custodian, name="retired-reporting-warehouse-key", rotation_period_days=90
    )
    vault_services.destruction_request_create(
        actor=custodian, key=retired, waiting_days=7, reason="the reporting warehouse is gone"
    )
    for _ in range(3):
        pki_services.crl_publish(actor=None, ca=issuing)
    api_token_create(
        actor=viewer,
        user=viewer,
        name="nightly-inventory-export-script",
        scope="read-only",
        days=30,
    )
    watcher_add(
        actor=viewer,
        email="payments-platform-oncall@example.org",
        scope="ca",
        ca_name=issuing.name,
    )
    watcher_add(actor=viewer, email="pki-team@example.org", scope="profile", profile="tls-server")


def test_phone_lists(journey, busy_portal) -> None:
    journey.sign_in(VIEWER)
    for name, url in LIST_PAGES.items():
        journey.page.goto(url)
        expect(journey.page.locator("h1")).to_be_visible()
        journey.shot(f"list-{name}")
        phone = journey.phone()  # fails on sideways scrolling and on off-screen cells
        rows = phone.locator("main .table-stack tbody tr")
        if rows.count():
            # Cards: the row's cells stack, each labelled, the last one (state, status, ...)
            # on screen without scrolling sideways.
            last = rows.first.locator("td").last
            box = last.bounding_box()
            assert box is not None and box["x"] + box["width"] <= PHONE["width"], (name, box)
        # A serial, a fingerprint or an event code is never split over two lines.
        for code in phone.locator("main code.token:visible, main .code-name:visible").all()[:20]:
            lines = code.evaluate(
                "e => Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight || 16))"
            )
            assert lines <= 1, f"{name}: {code.inner_text()!r} wraps onto {lines} lines"


#: How many lines the text of an element takes (its line boxes), whatever its padding.
LINES = """e => {
  const range = document.createRange();
  range.selectNodeContents(e);
  const tops = [...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top));
  return new Set(tops).size;
}"""


def assert_one_line(locator, what: str) -> None:
    """``locator`` is on one line (a long one scrolls inside its box) and the page does not
    scroll sideways."""
    expect(locator).to_be_visible()
    lines = locator.evaluate(LINES)
    assert lines == 1, f"{what} {locator.inner_text()!r} breaks onto {lines} lines on a phone"
    assert_no_sideways_scroll(locator.page)


def test_one_time_codes_stay_on_one_line_on_a_phone(journey, busy_portal) -> None:
    """Recovery codes, an invitation link and an enrollment token, each shown once, at
    390 px: never broken mid-code (a user copies them by hand or by selection)."""
    page = journey.page
    page.set_viewport_size(PHONE)
    journey.sign_in(VIEWER)
    # New recovery codes (the first ones were shown at enrolment): each whole, on one line.
    page.goto("/accounts/mfa/")
    page.get_by_label("Authentication code").fill(journey.authenticator.code(VIEWER))
    page.get_by_role("button", name="Generate new recovery codes").click()
    codes = page.locator("#recovery-codes li code")
    expect(codes.first).to_be_visible()
    assert codes.count() >= 5
    for code in codes.all():
        assert_one_line(code, "a recovery code")
        fits = code.evaluate("e => e.scrollWidth <= e.clientWidth")
        assert fits, f"recovery code {code.inner_text()!r} is cut off on a phone"
    # A new user's invitation link.
    page.goto("/users/new/")
    page.get_by_label("Username").fill("nadia-new-auditor")
    page.get_by_label("Auditor", exact=True).check()
    page.get_by_role("button", name="Create user").click()
    assert_one_line(page.locator("#invitation-link"), "the invitation link")
    # A client's enrollment token (a key custodian's page).
    journey.sign_out()
    journey.sign_in(CUSTODIAN)
    page.goto("/clients/new/")
    page.get_by_label("Name").fill("inventory-sync-service")
    page.get_by_role("button", name="Register").click()
    assert_one_line(page.locator("#enrollment-token"), "the enrollment token")
