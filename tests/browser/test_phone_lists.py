"""Every list page on a phone (390 px): screenshotted, no sideways scrolling, each row a card
whose cells are all on screen, and codes that never break mid-token.

The data is what makes lists hard to read on a narrow screen: long subjects and SANs,
40-digit serials, long descriptions, dotted event codes, many rows.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accounts.roles import Role
from pki import services as pki_services
from tests.browser.journeys import PHONE, expect
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
}


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
    custodian = make_user("kristina-custodian-with-a-long-name", Role.KEY_CUSTODIAN)
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
