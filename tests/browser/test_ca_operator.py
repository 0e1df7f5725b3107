"""Journey 3, CA operator: signs in with MFA, issues a certificate from a pasted CSR, reads its
decoded details, revokes it, publishes the CRL and downloads it; the downloaded bytes parse
as a CRL that lists the serial number the page showed.

Prerequisites made with the services (journey 1 makes them through the pages): the CA
operator's account and a root → intermediate CA hierarchy.
"""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from accounts.roles import Role
from pki import services
from tests.browser.journeys import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

HOST = "shop.example.org"


def shop_csr_pem() -> str:
    """What a web server's operator would paste: an EC P-256 CSR with a DNS name."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Shop"),
                    x509.NameAttribute(NameOID.COMMON_NAME, HOST),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def fact(page, term: str):
    """The value next to `term` in a facts list (<dt>term</dt><dd>value</dd>)."""
    return page.locator("dl.facts dt", has_text=re.compile(f"^{re.escape(term)}$")).locator(
        "xpath=following-sibling::dd[1]"
    )


@pytest.fixture
def operator_and_cas(make_user) -> None:
    """What journey 1 leaves for this one: the CA operator and root → intermediate."""
    make_user("omar-operator", Role.CA_OPERATOR)
    root = services.certificate_authority_create(
        actor=None, name="journey-root", subject="CN=Journey Root CA,O=Example", key_type="ecp256"
    )
    services.certificate_authority_create(
        actor=None,
        name="journey-issuing",
        subject="CN=Journey Issuing CA,O=Example",
        parent=root,
        key_type="ecp256",
    )


def test_ca_operator(operator_and_cas: None, journey, live_settings: str) -> None:
    page = journey.page

    assert journey.sign_in("omar-operator") == "enrolled"
    journey.shot("dashboard")
    journey.phone()

    # --- issue from a pasted CSR ----------------------------------------------------------
    journey.nav("Certificates")
    page.get_by_role("link", name="Issue from CSR").click()
    page.get_by_label("CSR (PEM)").fill(shop_csr_pem())
    page.get_by_label("Issuing CA").select_option("journey-issuing")
    page.get_by_label("Profile").select_option("tls-server")
    journey.shot("issue-from-csr")
    journey.phone()
    page.get_by_role("button", name="Review").click()
    expect(page.get_by_role("heading", name="Sign this certificate?")).to_be_visible()
    expect(fact(page, "Subject alternative names")).to_contain_text(f"dns:{HOST}")
    journey.shot("confirm-issue")
    page.get_by_role("button", name="Issue certificate").click()

    # --- its decoded details --------------------------------------------------------------
    expect(page.locator(".message.success")).to_contain_text("Certificate issued: serial")
    expect(page.locator("h1")).to_contain_text(f"CN={HOST}")
    expect(page.locator("h1 .badge")).to_have_text("valid")
    expect(fact(page, "Issuer")).to_contain_text("CN=Journey Issuing CA")
    expect(fact(page, "Subject alternative names")).to_have_text(f"dns:{HOST}")
    expect(fact(page, "Extended key usage")).to_contain_text("serverAuth")
    crl_url = f"{live_settings}/pki/crl/journey-issuing.crl"
    expect(fact(page, "CRL distribution points")).to_have_text(crl_url)
    serial_hex = fact(page, "Serial number").inner_text().strip()
    assert re.fullmatch(r"[0-9A-F]+", serial_hex), serial_hex
    journey.shot("certificate-detail")
    journey.phone()
    certificate_url = page.url

    # --- revoke it ------------------------------------------------------------------------
    page.get_by_role("link", name="Revoke…").click()
    page.get_by_label("Reason").select_option("keyCompromise")
    journey.shot("revoke")
    journey.phone()
    page.get_by_role("button", name="Continue…").click()
    expect(page.get_by_role("heading", name="Revoke this certificate?")).to_be_visible()
    journey.shot("confirm-revocation")
    page.get_by_role("button", name="Revoke", exact=True).click()
    expect(page.locator(".message.success")).to_contain_text("revoked (keyCompromise)")
    expect(page.locator("h1 .badge")).to_have_text("revoked")
    expect(page.get_by_role("link", name="Revoke…")).to_have_count(0)
    journey.shot("revoked")

    # --- publish the CRL and download it --------------------------------------------------
    fact(page, "Issued by CA").get_by_role("link").click()
    page.get_by_role("link", name="CRL status").click()
    page.get_by_role("button", name="Publish a new CRL").click()
    published = page.locator(".message.success")
    expect(published).to_contain_text("of journey-issuing published with 1 entries")
    crl_number = int(re.search(r"CRL #(\d+)", published.inner_text()).group(1))
    expect(fact(page, "CRL number")).to_have_text(str(crl_number))
    expect(fact(page, "Signature")).to_contain_text("verifies")
    journey.shot("crl-published")
    journey.phone()
    crl = x509.load_der_x509_crl(journey.download(page.get_by_role("link", name="CRL (DER)")))
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == crl_number
    entry = crl.get_revoked_certificate_by_serial_number(int(serial_hex, 16))
    assert entry is not None, f"serial {serial_hex} is not on the downloaded CRL"
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise

    # --- the certificate list, revoked ones only -------------------------------------------
    journey.nav("Certificates")
    page.get_by_label("Status").select_option("revoked")
    page.get_by_role("button", name="Filter").click()
    row = page.locator("tbody tr", has_text=serial_hex)
    expect(row).to_contain_text("revoked")
    journey.shot("certificates-revoked")
    journey.phone()
    row.get_by_role("link").click()
    assert page.url == certificate_url

    # --- a certificate with a generated key pair: a result page, the file once ------------
    journey.nav("Certificates")
    page.get_by_role("link", name="Issue with generated key").click()
    page.get_by_label("Issuing CA").select_option("journey-issuing")
    page.get_by_label("Profile").select_option("tls-client")
    page.get_by_label("Subject", exact=True).fill("CN=laptop-7,O=Example")
    page.get_by_label("Key type").select_option("ecp256")
    page.get_by_role("button", name="Review").click()
    page.get_by_label("PKCS#12 password").fill("journey-pkcs12-password")
    page.get_by_label("Password again").fill("journey-pkcs12-password")
    journey.shot("generated-confirm")
    page.get_by_role("button", name="Issue", exact=True).click()
    expect(page.get_by_role("heading", name="Certificate issued")).to_be_visible()
    result_url = page.url
    serial = fact(page, "Serial").inner_text().strip()
    assert re.fullmatch(r"[0-9A-F]+", serial), serial
    journey.shot("generated-result")
    journey.phone()  # the phone only looks: the download stays for the desktop
    p12 = journey.download(page.get_by_role("button", name="Download the file"))
    _key, certificate, _chain = pkcs12.load_key_and_certificates(p12, b"journey-pkcs12-password")
    assert certificate is not None and f"{certificate.serial_number:X}" == serial.lstrip("0")
    # Back and submit again (a reload of the result page, the Back button): nothing new.
    page.goto(result_url)
    expect(page.locator("#download-spent")).to_contain_text("was downloaded at")
    journey.shot("generated-downloaded")
