"""Journey 4, auditor: filters the audit log down to the other journeys' events, verifies the
chain, exports CSV; sees no write control anywhere; a forged POST is refused and changes
nothing.

Prerequisites made with the services, as the other journeys' people (journeys 1-3 do the
same through the pages): the administrator's CAs, the custodians' key, client, grant and
approved destruction, the CA operator's issued and revoked certificate and published CRL.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accounts.roles import Role
from audit.models import AuditEvent
from pki import services as pki_services
from pki.models import Certificate, CertificateStatus
from tests.browser.journeys import expect
from tests.factories import approver_make
from vault import clients
from vault import services as vault_services
from vault.models import GrantVersions, SymmetricKey

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

AUDITOR = "audrey-auditor"
CUSTODIAN = "carol-custodian"
OPERATOR = "omar-operator"
KEY = "payments-db"

#: Links that lead to a change (forms that POST are checked separately).
WRITE_LINK = re.compile(
    r"/new/$|/revoke/$|/release/$|/disable/$|/issue/|/publish/|/approvals/"
    r"|/keys/[^/]+/[^/]+/$|/clients/[^/]+/(suspend|resume|revoke|token)/$|/users/\d+/\w+/$"
)


def csr_pem(host: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.fixture
def other_journeys(make_user) -> dict[str, Certificate]:
    """What journeys 1-3 leave behind, made with the services by the same people."""
    admin = make_user("alice-admin", Role.ADMINISTRATOR)
    carol = make_user(CUSTODIAN, Role.KEY_CUSTODIAN)
    dave = approver_make("dave-custodian", Role.KEY_CUSTODIAN)  # may approve: own MFA
    omar = make_user(OPERATOR, Role.CA_OPERATOR)
    make_user(AUDITOR, Role.AUDITOR)

    root = pki_services.certificate_authority_create(
        actor=admin, name="journey-root", subject="CN=Journey Root CA,O=Example", key_type="ecp256"
    )
    issuing = pki_services.certificate_authority_create(
        actor=admin,
        name="journey-issuing",
        subject="CN=Journey Issuing CA,O=Example",
        parent=root,
        key_type="ecp256",
    )

    key = vault_services.symmetric_key_create(actor=carol, name=KEY, rotation_period_days=90)
    vault_services.symmetric_key_rotate(actor=carol, key=key)
    vault_services.key_version_compromise(actor=carol, key=key, number=1, reason="laptop stolen")
    client, _token = clients.client_create(actor=carol, name="billing")
    clients.grant_create(actor=carol, client=client, key=key, versions=GrantVersions.PRIMARY)
    request = vault_services.destruction_request_create(
        actor=carol, key=key, reason="service retired"
    )
    vault_services.destruction_request_approve(actor=dave, request=request)

    revoked = pki_services.certificate_issue_from_csr(
        actor=omar, ca=issuing, csr_pem_or_der=csr_pem("shop.example.org"), profile="tls-server"
    )
    pki_services.certificate_revoke(actor=omar, certificate=revoked, reason="keyCompromise")
    pki_services.crl_publish(actor=omar, ca=issuing)
    valid = pki_services.certificate_issue_from_csr(
        actor=omar, ca=issuing, csr_pem_or_der=csr_pem("www.example.org"), profile="tls-server"
    )
    # Short-lived ones too, so the dashboard's expiry chart has something to show.
    for host, days in (("api.example.org", 20), ("mail.example.org", 45), ("vpn.example.org", 80)):
        pki_services.certificate_issue_from_csr(
            actor=omar,
            ca=issuing,
            csr_pem_or_der=csr_pem(host),
            profile="tls-server",
            days=days,
        )
    return {"revoked": revoked, "valid": valid}


def table_column(page, header: str) -> list[str]:
    """The texts of one column of the page's table, by its header."""
    headers = [h.strip() for h in page.locator("thead th").all_inner_texts()]
    index = [h.lower() for h in headers].index(header.lower()) + 1
    return [
        cell.strip() for cell in page.locator(f"tbody tr td:nth-child({index})").all_inner_texts()
    ]


def filter_log(journey, **fields: str) -> None:
    """Fill the audit log's filter form (label → value) and apply it."""
    page = journey.page
    page.goto("/audit/")
    for label, value in fields.items():
        control = page.get_by_label(label, exact=True)
        if control.evaluate("element => element.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()


def assert_read_only(journey, path: str, step: str) -> None:
    """The page at `path` shows no control that changes anything."""
    page = journey.page
    page.goto(path)
    expect(page.locator("main h1")).to_be_visible()
    assert page.locator("main form[method=post]").count() == 0, f"{path} has a form that POSTs"
    hrefs = page.locator("main a[href]").evaluate_all("links => links.map(a => a.pathname)")
    writes = [href for href in hrefs if WRITE_LINK.search(href)]
    assert not writes, f"{path} links to changes: {writes}"
    for label in ("New key", "New CA", "Register a client", "Issue from CSR", "Revoke…", "Grant"):
        expect(page.get_by_role("link", name=label, exact=True)).to_have_count(0)
        expect(page.get_by_role("button", name=label, exact=True)).to_have_count(0)
    journey.shot(step)


def test_auditor(other_journeys: dict[str, Certificate], journey, live_settings: str) -> None:
    page = journey.page
    valid = other_journeys["valid"]

    journey.sign_in(AUDITOR)
    journey.shot("dashboard")
    journey.phone()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Approvals")).to_have_count(0)

    # --- the audit log, filtered down to the other journeys -------------------------------
    journey.nav("Audit log")
    journey.shot("audit-log")
    journey.phone()

    filter_log(journey, Actor=CUSTODIAN)
    actions = table_column(page, "Action")
    assert set(table_column(page, "Actor")) == {f"{CUSTODIAN} User"}
    for action in (
        "key.created",
        "key.rotated",
        "key.version_compromised",
        "client.created",
        "grant.created",
        "key.destruction_requested",
    ):
        assert any(action in cell for cell in actions), f"{action} missing from {actions}"
    journey.shot("audit-log-custodian")
    journey.phone()

    filter_log(journey, Actor=OPERATOR, Action="certificate.revoked")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("CN=shop.example.org")
    journey.shot("audit-log-revocation")

    filter_log(journey, **{"Target contains": KEY})
    actors = set(table_column(page, "Actor"))
    assert actors == {f"{CUSTODIAN} User", "dave-custodian User"}, actors
    assert any("key.destruction_approved" in cell for cell in table_column(page, "Action"))
    journey.shot("audit-log-key")

    # --- export what is shown as CSV -------------------------------------------------------
    exported = journey.download(page.get_by_role("link", name="Export CSV"))
    rows = [r for r in csv.DictReader(io.StringIO(exported.decode())) if r["record"] == "event"]
    assert rows, "the export holds no event"
    assert all(KEY in row["target_label"] for row in rows)
    shown = {int(n) for n in table_column(page, "#")}
    assert {int(row["sequence"]) for row in rows} == shown
    assert {"key.created", "key.destruction_approved"} <= {row["action"] for row in rows}

    # --- verify the chain ------------------------------------------------------------------
    page.get_by_role("link", name="Chain status").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.locator(".message.success")).to_contain_text("Log intact")
    expect(page.locator(".badge", has_text="intact")).to_be_visible()
    # The export integrated the log: the newest signed tree head is there to keep.
    head = journey.download(page.get_by_role("link", name="Download this signed head (JSON)"))
    assert b'"tree_head"' in head and b'"signature"' in head
    journey.shot("chain-verified")
    journey.phone()

    # --- read everything, change nothing ---------------------------------------------------
    assert_read_only(journey, "/users/", "users")
    page.get_by_role("link", name=CUSTODIAN).click()
    assert_read_only(journey, page.url, "user-detail")
    assert_read_only(journey, "/keys/", "keys")
    journey.phone()
    assert_read_only(journey, f"/keys/{KEY}/", "key-detail")
    journey.phone()
    assert_read_only(journey, "/clients/billing/", "client-detail")
    assert_read_only(journey, "/pki/", "certificate-authorities")
    assert_read_only(journey, "/pki/cas/journey-issuing/", "ca-detail")
    assert_read_only(journey, "/pki/cas/journey-issuing/crl/", "crl-status")
    assert_read_only(journey, "/pki/certificates/", "certificates")
    assert_read_only(journey, f"/pki/certificates/{valid.pk}/", "certificate-detail")
    journey.phone()

    # --- a forged POST, with the auditor's own session and a valid CSRF token ---------------
    keys_before = list(SymmetricKey.objects.order_by("pk").values_list("name", "state"))
    token = page.locator("header input[name=csrfmiddlewaretoken]").first.input_value()
    forged = [
        ("/keys/new/", {"name": "forged-key"}),
        (f"/pki/certificates/{valid.pk}/revoke/", {"reason": "keyCompromise", "confirm": "yes"}),
        (f"/keys/{KEY}/cancel-destruction/", {}),
    ]
    for path, data in forged:
        response = page.request.post(
            path,
            form={"csrfmiddlewaretoken": token, **data},
            headers={"Referer": live_settings + "/"},
            max_redirects=0,
        )
        assert response.status == 403, f"POST {path}: {response.status}"
    assert list(SymmetricKey.objects.order_by("pk").values_list("name", "state")) == keys_before
    valid.refresh_from_db()
    assert valid.status == CertificateStatus.VALID
    # Each refusal recorded, by the permission check, not the CSRF check: the token was good.
    denied = {
        event.details["path"]: event.details
        for event in AuditEvent.objects.filter(action="access.denied", actor_name=AUDITOR)
    }
    assert set(denied) == {path for path, _data in forged}
    for details in denied.values():
        assert details["method"] == "POST"
        assert not details["reason"].startswith("CSRF"), details
    page.goto(f"/pki/certificates/{valid.pk}/")
    expect(page.locator("h1 .badge")).to_have_text("valid")
    filter_log(journey, Actor=AUDITOR, Outcome="denied")
    expect(page.locator("tbody tr")).to_have_count(len(forged))
    journey.shot("audit-log-refused-posts")
    journey.phone()

    # --- the dashboard, with everything the journeys left: the README's screenshot ---------
    journey.nav("Dashboard")
    journey.shot("dashboard-end", readme="dashboard.png")
    journey.phone()
