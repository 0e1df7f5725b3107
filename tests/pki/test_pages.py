"""PKI pages through real HTTP: issuance with confirmation, generated key pairs, CAs, lists,
details, downloads and validation."""

from __future__ import annotations

import html
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.roles import Role
from pki import selectors, services
from pki.models import CAState, Certificate, CertificateAuthority

from .conftest import csr_der, csr_pem, pki_state

pytestmark = pytest.mark.django_db

PASSWORD = "Tr0ub4dor&3-horse"


def text(response) -> str:
    return html.unescape(response.content.decode())


def carried(form) -> dict[str, str]:
    """The values a confirmation page's form would post back (hidden fields as rendered)."""
    return {
        name: "" if form[name].value() is None else str(form[name].value()) for name in form.fields
    }


def request_csr(client: Client, csr: bytes | str, **extra: str) -> object:
    return client.post(
        "/pki/issue/",
        {
            "step": "request",
            "csr_text": csr.decode() if isinstance(csr, bytes) else csr,
            "ca": "issuing",
            "profile": "tls-server",
            **extra,
        },
    )


# --- issuance from a CSR ---------------------------------------------------------------------


def test_issue_from_csr_shows_what_will_be_signed_then_signs_it(
    operator: Client, issuing, ec_key
) -> None:
    before = pki_state()
    review = request_csr(operator, csr_pem(ec_key))
    assert review.status_code == 200
    page = text(review)
    assert "Sign this certificate?" in page
    for expected in [
        "CN=www.example.org,O=Example Org",
        "dns:www.example.org",
        "serverAuth",
        "CA:FALSE",
        "http://testserver/pki/crl/issuing.crl",
        "http://testserver/pki/ocsp/issuing",
        "EC P-256",
    ]:
        assert expected in page, expected
    assert pki_state() == before  # nothing is signed before the confirmation

    # Browsers submit line breaks in hidden fields as CRLF.
    values = {k: v.replace("\n", "\r\n") for k, v in carried(review.context["issue_form"]).items()}
    issued = operator.post("/pki/issue/", {**values, "step": "issue"})
    assert issued.status_code == 302
    record = Certificate.objects.get(source="csr")
    assert issued["Location"] == f"/pki/certificates/{record.pk}/"
    assert record.subject == "CN=www.example.org,O=Example Org"
    assert record.issued_by_name == "carol-operator"
    detail = operator.get(issued["Location"])
    body = text(detail)
    assert f"Certificate issued: serial {record.serial_number_display}" in body
    assert record.fingerprint_sha256_display in body
    assert "BEGIN CERTIFICATE" not in body  # decoded fields, not raw PEM


def test_subject_and_sans_edited_on_the_confirmation_page(
    operator: Client, issuing, ec_key
) -> None:
    review = request_csr(operator, csr_pem(ec_key))
    edit = {**carried(review.context["edit_form"]), "step": "review"}
    edit["subject"] = "CN=Zoë Ødegård,O=Bücher GmbH"
    edit["sans"] = "dns:shop.example.org\ndns:www.shop.example.org"
    second = operator.post("/pki/issue/", edit)
    assert second.status_code == 200
    page = text(second)
    assert "CN=Zoë Ødegård,O=Bücher GmbH" in page and "dns:www.shop.example.org" in page
    assert not Certificate.objects.filter(source="csr").exists()
    operator.post("/pki/issue/", {**carried(second.context["issue_form"]), "step": "issue"})
    record = Certificate.objects.get(source="csr")
    assert record.subject == "CN=Zoë Ødegård,O=Bücher GmbH"
    assert record.san_list == ["dns:shop.example.org", "dns:www.shop.example.org"]


def test_an_edit_the_profile_refuses_is_shown_and_nothing_signed(
    operator: Client, issuing, ec_key
) -> None:
    review = request_csr(operator, csr_pem(ec_key))
    edit = {**carried(review.context["edit_form"]), "step": "review", "sans": "email:a@b.org"}
    refused = operator.post("/pki/issue/", edit)
    assert refused.status_code == 400
    assert "does not allow email addresses as SAN" in text(refused)
    # Posting it straight to the issue step is refused the same way.
    assert operator.post("/pki/issue/", {**edit, "step": "issue"}).status_code == 400
    assert not Certificate.objects.filter(source="csr").exists()


def test_a_der_csr_file_can_be_uploaded(operator: Client, issuing, rsa_key) -> None:
    upload = SimpleUploadedFile("req.der", csr_der(csr_pem(rsa_key)))
    review = operator.post(
        "/pki/issue/",
        {"step": "request", "csr_file": upload, "ca": "issuing", "profile": "tls-server"},
    )
    assert review.status_code == 200
    assert "RSA 2048" in text(review) and "keyEncipherment" in text(review)


def test_the_ca_can_be_preselected(operator: Client, issuing) -> None:
    page = operator.get("/pki/issue/?ca=issuing")
    assert page.context["form"]["ca"].value() == "issuing"


# --- generated key pairs ---------------------------------------------------------------------


def generated_request(client: Client, **extra: str):
    return client.post(
        "/pki/issue/generated/",
        {
            "step": "request",
            "ca": "issuing",
            "profile": "tls-client",
            "subject": "CN=Zoë,O=Example Org",
            "sans": "email:zoe@example.org",
            "key_type": "ecp256",
            **extra,
        },
    )


def issue_and_download(client: Client, data: dict[str, str]):
    """Submit the confirmation form (Post/Redirect/Get), then download from the result page."""
    issued = client.post("/pki/issue/generated/", data)
    assert issued.status_code == 302, text(issued)
    result = client.get(issued["Location"])
    assert result.status_code == 200
    return client.post(issued["Location"])


def test_generated_key_pair_is_downloaded_once_as_pkcs12(
    operator: Client, issuing, openssl: Callable, tmp_path: Path
) -> None:
    confirm = generated_request(operator)
    assert confirm.status_code == 200
    page = text(confirm)
    assert "Issue this certificate with a new EC P-256 key?" in page
    assert "clientAuth" in page and 'type="password"' in page
    assert pki_state()[1] == 1  # only the intermediate's own record so far

    data = {**carried(confirm.context["form"]), "step": "issue"}
    data.update(password1=PASSWORD, password2=PASSWORD, delivery="pkcs12")
    response = issue_and_download(operator, data)
    assert response.status_code == 200
    record = Certificate.objects.get(source="generated")
    assert response["Content-Type"] == "application/x-pkcs12"
    assert response["Content-Disposition"] == (
        f'attachment; filename="issuing-{record.serial_number_display}.p12"'
    )
    assert "no-store" in response["Cache-Control"]
    (tmp_path / "out.p12").write_bytes(response.content)
    opened = openssl(
        "pkcs12", "-info", "-in", tmp_path / "out.p12", "-passin", f"pass:{PASSWORD}", "-noenc"
    )
    assert opened.returncode == 0, opened.stderr
    assert "BEGIN PRIVATE KEY" in opened.stdout
    assert opened.stdout.count("BEGIN CERTIFICATE") == 3  # leaf, intermediate, root
    wrong = openssl(
        "pkcs12", "-info", "-in", tmp_path / "out.p12", "-passin", "pass:wrong-password", "-noenc"
    )
    assert wrong.returncode != 0
    _key, cert, chain = pkcs12.load_key_and_certificates(response.content, PASSWORD.encode())
    assert cert.public_bytes(serialization.Encoding.DER) == bytes(record.certificate_der)
    assert cert.subject.rfc4514_string() == "CN=Zoë,O=Example Org"
    assert len(chain) == 2


def test_generated_key_pair_as_pem_bundle(operator: Client, issuing) -> None:
    confirm = generated_request(operator, key_type="rsa2048")
    data = {**carried(confirm.context["form"]), "step": "issue"}
    data.update(password1=PASSWORD, password2=PASSWORD, delivery="pem")
    response = issue_and_download(operator, data)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response["Content-Disposition"].endswith('.pem"')
    bundle = response.content
    assert bundle.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert bundle.count(b"BEGIN CERTIFICATE") == 3
    key = serialization.load_pem_private_key(bundle, PASSWORD.encode())
    leaf = x509.load_pem_x509_certificates(bundle)[0]
    assert key.public_key() == leaf.public_key()


@pytest.mark.parametrize(
    ("passwords", "message"),
    [
        ((PASSWORD, PASSWORD + "x"), "The two passwords differ."),
        (("short", "short"), "Ensure this value has at least 8 characters"),
        (("", ""), "This field is required."),
    ],
)
def test_bad_passwords_issue_nothing(operator: Client, issuing, passwords, message: str) -> None:
    confirm = generated_request(operator)
    data = {**carried(confirm.context["form"]), "step": "issue", "delivery": "pkcs12"}
    data.update(password1=passwords[0], password2=passwords[1])
    before = pki_state()
    response = operator.post("/pki/issue/generated/", data)
    assert response.status_code == 400
    page = text(response)
    assert message in page
    assert "Issue this certificate with a new EC P-256 key?" in page  # still shown
    if passwords[0]:
        assert passwords[0] not in page and passwords[1] not in page  # never echoed
    assert pki_state() == before


def test_generated_request_refused_by_the_profile(operator: Client, issuing) -> None:
    before = pki_state()
    response = generated_request(operator, profile="tls-server", sans="email:zoe@example.org")
    assert response.status_code == 400
    assert "The tls-server profile does not allow email addresses as SAN" in text(response)
    assert pki_state() == before


# --- certificate authorities -----------------------------------------------------------------


def test_administrator_creates_a_ca_after_confirmation(administrator: Client, root) -> None:
    form = {
        "name": "people",
        "subject": "CN=Personen-CA Zürich,O=Müller AG",
        "parent": "root",
        "key_type": "ecp256",
        "days": "365",
        "path_length": "",
    }
    confirm = administrator.post("/pki/cas/new/", form)
    assert confirm.status_code == 200
    page = text(confirm)
    assert "Create CA people?" in page and "CN=Personen-CA Zürich,O=Müller AG" in page
    assert "http://testserver/pki/crl/root.crl" in page
    assert not CertificateAuthority.objects.filter(name="people").exists()
    created = administrator.post(
        "/pki/cas/new/", {**carried(confirm.context["form"]), "confirm": "yes"}
    )
    assert created.status_code == 302 and created["Location"] == "/pki/cas/people/"
    ca = CertificateAuthority.objects.get(name="people")
    assert ca.parent == root and ca.subject == "CN=Personen-CA Zürich,O=Müller AG"
    detail = text(administrator.get("/pki/cas/people/"))
    assert "Certificate authority people created" in detail
    assert "ca.created" in detail and "Disable…" in detail


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "Bad Name"}, "Use 1-64 lower-case letters"),
        ({"name": "root"}, "A CA named 'root' already exists"),
        ({"subject": "CN=Test Root CA,O=Example Org"}, "A CA with the subject"),
        ({"parent": "root", "days": "4000"}, "after its parent CA"),
        ({"subject": "Foo"}, "is not of the form ATTRIBUTE=value"),
        ({"path_length": "11"}, "Ensure this value is less than or equal to 10."),
        ({"parent": "nope"}, "Select a valid choice."),
    ],
)
def test_ca_form_refusals_create_nothing(
    administrator: Client, root, form: dict, message: str
) -> None:
    data = {"name": "second", "subject": "CN=Second", "key_type": "ecp256", **form}
    before = pki_state()
    for extra in ({}, {"confirm": "yes"}):
        response = administrator.post("/pki/cas/new/", {**data, **extra})
        assert response.status_code == 400
        assert message in text(response)
    assert pki_state() == before


def test_administrator_disables_a_ca(administrator: Client, issuing) -> None:
    assert "A disabled CA issues no more" in text(administrator.get("/pki/cas/issuing/disable/"))
    response = administrator.post("/pki/cas/issuing/disable/", {"reason": "superseded"})
    assert response.status_code == 302
    issuing.refresh_from_db()
    assert issuing.state == CAState.DISABLED
    again = administrator.post("/pki/cas/issuing/disable/", {"reason": "again"})
    assert again.status_code == 400 and "only an active CA can be disabled" in text(again)


def test_ca_pages_show_decoded_certificates_and_downloads(operator: Client, issuing, root) -> None:
    listing = text(operator.get("/pki/"))
    assert "CN=Test Issuing CA,O=Example Org" in listing and "self-signed root" in listing
    detail = text(operator.get("/pki/cas/issuing/"))
    assert issuing.fingerprint_sha256_display in detail
    assert "keyCertSign" in detail and "CA:TRUE, pathlen:0" in detail
    assert "BEGIN CERTIFICATE" not in detail
    chain = operator.get("/pki/cas/issuing/chain.pem")
    assert chain["Content-Type"] == "application/x-pem-file"
    assert chain.content.decode() == issuing.certificate_pem + root.certificate_pem


def test_public_ca_certificate_needs_no_sign_in(client: Client, issuing) -> None:
    der = client.get("/pki/ca/issuing.crt")
    assert der.status_code == 200
    assert der["Content-Type"] == "application/pkix-cert"
    assert der.content == bytes(issuing.certificate_der)
    pem = client.get("/pki/ca/issuing.pem")
    assert pem.status_code == 200 and pem.content.decode() == issuing.certificate_pem
    assert client.get("/pki/ca/nope.crt").status_code == 404
    assert client.post("/pki/ca/issuing.crt").status_code == 405


# --- certificates ----------------------------------------------------------------------------


@pytest.fixture
def several(issuing, root, ec_key) -> list[Certificate]:
    issued = []
    for index, (profile, subject, sans) in enumerate(
        [
            ("tls-server", "CN=alpha.example.org", ("dns:alpha.example.org",)),
            ("tls-server", "CN=beta.example.org", ("dns:beta.example.org",)),
            ("tls-client", "CN=Zoë", ("email:zoe@example.org",)),
        ]
    ):
        issued.append(
            services.certificate_issue_from_csr(
                actor=None,
                ca=issuing,
                csr_pem_or_der=csr_pem(ec_key, subject, sans),
                profile=profile,
                days=10 if index == 0 else None,
            )
        )
    return issued


def listed(client: Client, query: str) -> list[str]:
    response = client.get(f"/pki/certificates/{query}")
    assert response.status_code == 200
    return [c.subject for c in response.context["page"].certificates]


def test_certificate_list_filters_and_search(operator: Client, several) -> None:
    _alpha, beta, zoe = several
    assert listed(operator, "") == [
        "CN=Zoë",
        "CN=beta.example.org",
        "CN=alpha.example.org",
        "CN=Test Issuing CA,O=Example Org",
    ]
    assert listed(operator, "?ca=issuing") == [
        "CN=Zoë",
        "CN=beta.example.org",
        "CN=alpha.example.org",
    ]
    assert listed(operator, "?profile=tls-client") == ["CN=Zoë"]
    assert listed(operator, "?profile=sub-ca") == ["CN=Test Issuing CA,O=Example Org"]
    assert listed(operator, "?expiring=30") == ["CN=alpha.example.org"]
    assert listed(operator, "?q=BETA") == ["CN=beta.example.org"]
    assert listed(operator, "?q=zoe%40example") == ["CN=Zoë"]
    assert listed(operator, f"?q={zoe.serial_number_display}") == ["CN=Zoë"]
    colons = ":".join(zoe.serial_number_display[i : i + 2] for i in range(0, 40, 2)).lower()
    assert listed(operator, f"?q={colons}") == ["CN=Zoë"]
    Certificate.objects.filter(pk=beta.pk).update(status="revoked")
    assert listed(operator, "?status=revoked") == ["CN=beta.example.org"]
    assert operator.get("/pki/certificates/?expiring=0").status_code == 400


def _reader() -> User:
    return User.objects.get(username="carol-operator")


def test_keyset_pages_cover_everything_once(operator: Client, several) -> None:
    user = _reader()
    seen, after = [], None
    while True:
        page = selectors.certificate_page(user=user, after=after, size=2)
        seen += [c.pk for c in page.certificates]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert seen == sorted(Certificate.objects.values_list("pk", flat=True), reverse=True)
    # The page's Next link carries the filters and the cursor.
    response = operator.get("/pki/certificates/?ca=issuing&after=999999")
    assert response.status_code == 200


def test_certificate_detail_and_downloads(operator: Client, several, issuing) -> None:
    record = several[0]
    detail = text(operator.get(f"/pki/certificates/{record.pk}/"))
    for expected in [
        "CN=alpha.example.org",
        "dns:alpha.example.org",
        "EC P-256",
        "serverAuth",
        "digitalSignature",
        record.serial_number_display,
        record.fingerprint_sha256_display,
        "http://testserver/pki/crl/issuing.crl",
    ]:
        assert expected in detail, expected
    assert "BEGIN CERTIFICATE" not in detail
    pem = operator.get(f"/pki/certificates/{record.pk}/download/pem/")
    assert pem["Content-Type"] == "application/x-pem-file"
    assert pem["Content-Disposition"] == (
        f'attachment; filename="issuing-{record.serial_number_display}.pem"'
    )
    assert pem.content.decode() == record.certificate_pem
    der = operator.get(f"/pki/certificates/{record.pk}/download/der/")
    assert der["Content-Type"] == "application/pkix-cert"
    assert der.content == bytes(record.certificate_der)
    chain = operator.get(f"/pki/certificates/{record.pk}/download/chain/")
    assert chain.content.decode() == record.certificate_pem + issuing.certificate_pem
    assert operator.get(f"/pki/certificates/{record.pk}/download/p12/").status_code == 404
    assert operator.get("/pki/certificates/999999/").status_code == 404


# --- validation ------------------------------------------------------------------------------


def test_validation_page_lists_every_check(operator: Client, several) -> None:
    record = several[1]
    response = operator.post(
        "/pki/validate/",
        {
            "certificate_text": record.certificate_pem,
            "purpose": "server",
            "hostname": "beta.example.org",
        },
    )
    assert response.status_code == 200
    page = text(response)
    assert page.count('<span class="badge ok">pass</span>') == 11
    assert "Issued here" in page and "beta.example.org matches dns:beta.example.org" in page
    mismatch = operator.post(
        "/pki/validate/",
        {
            "certificate_text": record.certificate_pem,
            "purpose": "server",
            "hostname": "evil.example",
        },
    )
    page = text(mismatch)
    assert "not valid" in page
    assert "evil.example does not match the certificate's names (dns:beta.example.org)" in page


def test_validation_page_with_an_uploaded_der_and_chain(operator: Client, several, issuing) -> None:
    record = several[2]
    response = operator.post(
        "/pki/validate/",
        {
            "certificate_file": SimpleUploadedFile("c.der", bytes(record.certificate_der)),
            "chain_text": issuing.certificate_pem,
            "purpose": "client",
        },
    )
    assert response.status_code == 200
    assert response.context["outcome"].report.ok


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"certificate_text": "hello"}, "the data is not a certificate"),
        (
            {"certificate_text": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"},
            "the PEM block is damaged",
        ),
    ],
)
def test_validation_page_reports_on_any_bytes(
    operator: Client, root, data: dict, message: str
) -> None:
    """Issue 18: bytes that are not a certificate give a report (200), never an error page."""
    before = pki_state()
    response = operator.post("/pki/validate/", {"purpose": "any", **data})
    assert response.status_code == 200
    page = text(response)
    assert "not valid" in page and message in page
    assert response.context["outcome"].report.check("decoding").passed is False
    assert pki_state() == before


def test_validation_page_reports_on_an_underscore_hostname(operator: Client, several) -> None:
    response = operator.post(
        "/pki/validate/",
        {
            "certificate_text": several[1].certificate_pem,
            "purpose": "server",
            "hostname": "under_score.example.org",
        },
    )
    assert response.status_code == 200
    assert "under_score.example.org does not match" in text(response)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Paste the certificate or upload a file."),
        (
            {"certificate_text": "x" * 70000},
            "The pasted certificate is 70,000 bytes; at most 65,536 bytes (64 KiB)",
        ),
    ],
)
def test_validation_page_refuses_bad_input(
    operator: Client, root, data: dict, message: str
) -> None:
    before = pki_state()
    response = operator.post("/pki/validate/", {"purpose": "any", **data})
    assert response.status_code == 400
    assert message in text(response)
    assert pki_state() == before


def test_validating_changes_nothing(operator: Client, several) -> None:
    before = pki_state()
    operator.post(
        "/pki/validate/", {"certificate_text": several[0].certificate_pem, "purpose": "any"}
    )
    assert pki_state() == before


def test_navigation_shows_pki_to_readers_only(role_client, issuing) -> None:
    assert b'href="/pki/certificates/"' in role_client(Role.AUDITOR).get("/").content
    assert b'href="/pki/' not in role_client(Role.KEY_CUSTODIAN).get("/").content


def test_no_openssl_warning_on_the_chain(
    operator: Client, several, issuing, root, tmp_path: Path
) -> None:
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    chain = operator.get(f"/pki/certificates/{several[0].pk}/download/chain/").content
    (tmp_path / "chain.pem").write_bytes(chain)
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tmp_path / "root.pem",
            "-untrusted",
            tmp_path / "chain.pem",
            tmp_path / "chain.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip().endswith(": OK"), done.stderr
