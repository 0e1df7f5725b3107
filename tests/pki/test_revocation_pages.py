"""The portal's revocation pages and every role's access to them, the CRL page and the
public views: CA operators revoke, release and publish; administrators and auditors read;
key custodians get nothing but the public views; anonymous users get only the public views."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from pki import services
from pki.models import CARevocationRequest, Certificate, CertificateStatus, RevocationList

from .conftest import csr_pem, pki_state

pytestmark = pytest.mark.django_db

ADMIN, OPERATOR, AUDITOR, CUSTODIAN = (
    Role.ADMINISTRATOR,
    Role.CA_OPERATOR,
    Role.AUDITOR,
    Role.KEY_CUSTODIAN,
)
READERS = {ADMIN, OPERATOR, AUDITOR}


@pytest.fixture
def leaf(issuing, ec_key) -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )


@pytest.fixture
def held(issuing, ec_key) -> Certificate:
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr_pem(
            ec_key, subject="CN=held.example.org", sans=("dns:held.example.org",)
        ),
        profile="tls-server",
    )
    return services.certificate_revoke(actor=None, certificate=record, reason="certificateHold")


def crl_count() -> int:
    return RevocationList.objects.count()


# --- the revoke form ------------------------------------------------------------------------


def test_revoke_form_confirmation_and_revocation(operator: Client, leaf: Certificate) -> None:
    url = f"/pki/certificates/{leaf.pk}/revoke/"
    page = operator.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    for reason in ("keyCompromise", "cACompromise", "certificateHold", "privilegeWithdrawn"):
        assert f'value="{reason}"' in text
    before = (pki_state(), crl_count())
    form = {"reason": "keyCompromise", "invalidity_date": "2026-01-15T08:30"}
    confirm = operator.post(url, form)
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Revoke this certificate?" in text and "Key compromise" in text
    assert "2026-01-15T08:30:00Z" in text
    assert 'name="confirm" value="yes"' in text
    assert (pki_state(), crl_count()) == before  # the confirmation page changes nothing
    done = operator.post(url, {**form, "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == f"/pki/certificates/{leaf.pk}/"
    leaf.refresh_from_db()
    assert leaf.revocation_reason == "keyCompromise"
    assert leaf.invalidity_date.isoformat() == "2026-01-15T08:30:00+00:00"
    assert crl_count() == before[1] + 1
    detail = operator.get(done["Location"]).content.decode()
    assert "revoked" in detail and "keyCompromise" in detail and "Key compromised since" in detail


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"reason": "superseded", "invalidity_date": "2026-01-01T00:00"},
            "goes with keyCompromise",
        ),
        ({"reason": "removeFromCRL"}, "Select a valid choice"),
        ({"reason": "keyCompromise", "invalidity_date": "not a date"}, "Enter a valid date/time"),
        ({"reason": "keyCompromise", "invalidity_date": "2999-01-01T00:00"}, "is in the future"),
    ],
)
@pytest.mark.parametrize("confirm", [False, True], ids=["preview", "confirm"])
def test_revoke_form_bad_input(
    operator: Client, leaf: Certificate, form: dict[str, str], message: str, confirm: bool
) -> None:
    before = (pki_state(), crl_count())
    data = {**form, **({"confirm": "yes"} if confirm else {})}
    response = operator.post(f"/pki/certificates/{leaf.pk}/revoke/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert (pki_state(), crl_count()) == before


def test_revoking_twice_from_the_portal(operator: Client, leaf: Certificate) -> None:
    services.certificate_revoke(actor=None, certificate=leaf, reason="superseded")
    before = (pki_state(), crl_count())
    response = operator.post(
        f"/pki/certificates/{leaf.pk}/revoke/", {"reason": "superseded", "confirm": "yes"}
    )
    assert response.status_code == 400
    assert "is already revoked" in response.content.decode()
    assert (pki_state(), crl_count()) == before
    # No revoke button on a revoked certificate's page.
    assert "/revoke/" not in operator.get(f"/pki/certificates/{leaf.pk}/").content.decode()


def test_the_confirmation_warns_about_an_intermediate(
    operator: Client, make_user, signed_in, root, issuing
) -> None:
    record = Certificate.objects.get(ca=root, serial_hex=issuing.serial_hex)
    response = operator.post(f"/pki/certificates/{record.pk}/revoke/", {"reason": "cACompromise"})
    assert response.status_code == 200
    assert "This is the certificate of CA issuing." in response.content.decode()
    # Two-person rule: the confirmation asks for the revocation, with a reason for the
    # approver (a blank one is refused), and a second operator approves.
    blank = operator.post(
        f"/pki/certificates/{record.pk}/revoke/",
        {"reason": "cACompromise", "confirm": "yes", "comment": "  "},
    )
    assert blank.status_code == 400 and "Say why this CA must be revoked" in (
        blank.content.decode()
    )
    assert not CARevocationRequest.objects.exists()
    done = operator.post(
        f"/pki/certificates/{record.pk}/revoke/",
        {"reason": "cACompromise", "confirm": "yes", "comment": "its key was on a stolen laptop"},
    )
    assert done.status_code == 302 and done["Location"] == "/pki/revocations/"
    issuing.refresh_from_db()
    assert issuing.state == "active"
    asked = CARevocationRequest.objects.get(status="pending")
    second = signed_in(make_user("dora-operator", Role.CA_OPERATOR))
    approved = second.post(f"/approvals/ca-revocation/{asked.pk}/", {"decision": "approve"})
    assert approved.status_code == 302
    issuing.refresh_from_db()
    assert issuing.state == "revoked"
    ca_page = operator.get("/pki/cas/issuing/").content.decode()
    assert "it issues nothing more" in ca_page


def test_release_a_hold_from_the_portal(operator: Client, held: Certificate) -> None:
    detail = operator.get(f"/pki/certificates/{held.pk}/").content.decode()
    assert "on hold" in detail and "Release hold" in detail
    url = f"/pki/certificates/{held.pk}/release/"
    assert operator.get(url).status_code == 200
    response = operator.post(url)
    assert response.status_code == 302
    held.refresh_from_db()
    assert held.status == CertificateStatus.VALID
    again = operator.post(url)
    assert again.status_code == 400
    assert "Only a certificate on hold" in again.content.decode()


# --- the CRL page -----------------------------------------------------------------------------


def test_crl_page_shows_the_current_crl(operator: Client, held: Certificate) -> None:
    from pki import services

    services.crl_publish(actor=None, ca=held.ca)  # the hold is in the delta until then
    crl = RevocationList.objects.filter(ca=held.ca, is_delta=False).order_by("-crl_number").first()
    text = operator.get("/pki/cas/issuing/crl/").content.decode()
    assert f"<dt>CRL number</dt><dd>{crl.crl_number}</dd>" in text
    assert "1 revoked certificate" in text
    assert f"{crl.size}\xa0bytes" in text and f"({crl.size} bytes)" not in text  # said once
    assert "verifies" in text and 'badge ok">ok' in text
    assert crl.sha256 in text
    assert "Publish a new CRL" in text


def test_crl_page_warns_when_due_and_when_expired(operator: Client, issuing) -> None:
    from datetime import timedelta

    from django.utils import timezone

    crl = RevocationList.objects.filter(ca=issuing, is_delta=False).order_by("-crl_number").first()
    now = timezone.now()
    RevocationList.objects.filter(pk=crl.pk).update(
        this_update=now - timedelta(days=5), next_update=now + timedelta(days=2)
    )
    text = operator.get("/pki/cas/issuing/crl/").content.decode()
    assert "past half its lifetime" in text and "publish_crls" in text
    RevocationList.objects.filter(pk=crl.pk).update(
        this_update=now - timedelta(days=8), next_update=now - timedelta(days=1)
    )
    text = operator.get("/pki/cas/issuing/crl/").content.decode()
    assert "The CRL has expired" in text


def test_crl_page_notices_bytes_that_do_not_match(operator: Client, issuing) -> None:
    crl = RevocationList.objects.filter(ca=issuing, is_delta=False).order_by("-crl_number").first()
    RevocationList.objects.filter(pk=crl.pk).update(crl_number=crl.crl_number + 5)
    text = operator.get("/pki/cas/issuing/crl/").content.decode()
    assert "The stored CRL is not sound" in text


def test_publish_now(operator: Client, issuing) -> None:
    before = (
        RevocationList.objects.filter(ca=issuing, is_delta=False).order_by("-crl_number").first()
    )
    response = operator.post("/pki/cas/issuing/crl/publish/")
    assert response.status_code == 302 and response["Location"] == "/pki/cas/issuing/crl/"
    after = (
        RevocationList.objects.filter(ca=issuing, is_delta=False).order_by("-crl_number").first()
    )
    # The complete CRL after the delta CRL of the previous one (numbers are shared).
    assert after.crl_number == before.crl_number + 2 and after.trigger == "manual"
    assert after.published_by_name == "carol-operator"
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_name, event.target_label) == (
        "crl.published",
        "carol-operator",
        "issuing",
    )
    assert event.details["trigger"] == "manual"
    assert event.details["crl_number"] == after.crl_number
    assert event.details["previous_crl_number"] == before.crl_number
    assert operator.get("/pki/cas/issuing/crl/publish/").status_code == 405


# --- every role -------------------------------------------------------------------------------

# page -> roles that get 200 on GET (other roles 403; anonymous: sign-in redirect)
GET_ACCESS = {
    "/pki/cas/issuing/crl/": READERS,
    "/pki/certificates/{leaf}/revoke/": {OPERATOR},
    "/pki/certificates/{held}/release/": {OPERATOR},
}
PUBLIC = [
    "/pki/crl/issuing.crl",
    "/pki/crl/issuing.pem",
    "/pki/ca/issuing.crt",
    "/pki/ca/issuing.pem",
]


def _ocsp_get_url(issuing, leaf: Certificate) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(
            x509.load_pem_x509_certificate(leaf.certificate_pem.encode()),
            x509.load_pem_x509_certificate(issuing.certificate_pem.encode()),
            hashes.SHA1(),  # noqa: S303 - what OCSP clients use for CertID
        )
        .build()
    )
    der = request.public_bytes(serialization.Encoding.DER)
    return "/pki/ocsp/issuing/" + base64.b64encode(der).decode()


@pytest.mark.parametrize("role", list(Role))
def test_every_role(role_client, role: Role, issuing, leaf: Certificate, held) -> None:
    client = role_client(role)
    for template, allowed in GET_ACCESS.items():
        url = template.format(leaf=leaf.pk, held=held.pk)
        assert client.get(url).status_code == (200 if role in allowed else 403), (role, url)
    for url in [*PUBLIC, _ocsp_get_url(issuing, leaf)]:
        assert client.get(url).status_code == 200, (role, url)
    ca_page = client.get("/pki/cas/issuing/")
    if role in READERS:
        assert "/pki/cas/issuing/crl/" in ca_page.content.decode()


@pytest.mark.parametrize("role", list(Role))
def test_posts_by_role(role_client, role: Role, issuing, leaf: Certificate, held) -> None:
    client = role_client(role)
    before = (pki_state(), crl_count())
    posts = [
        (f"/pki/certificates/{leaf.pk}/revoke/", {"reason": "superseded", "confirm": "yes"}),
        (f"/pki/certificates/{held.pk}/release/", {}),
        ("/pki/cas/issuing/crl/publish/", {}),
    ]
    if role is OPERATOR:
        for url, data in posts:
            assert client.post(url, data).status_code == 302, url
        leaf.refresh_from_db()
        held.refresh_from_db()
        assert leaf.is_revoked and not held.is_revoked
        return
    for url, data in posts:
        assert client.post(url, data).status_code == 403, (role, url)
        denied = AuditEvent.objects.order_by("-sequence").first()
        assert (denied.action, denied.outcome) == ("access.denied", "denied")
    assert (pki_state()[:2], crl_count()) == (before[0][:2], before[1])


def test_anonymous(client: Client, issuing, leaf: Certificate, held) -> None:
    for template in GET_ACCESS:
        url = template.format(leaf=leaf.pk, held=held.pk)
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    before = (pki_state()[:2], crl_count())
    for url in (
        f"/pki/certificates/{leaf.pk}/revoke/",
        f"/pki/certificates/{held.pk}/release/",
        "/pki/cas/issuing/crl/publish/",
    ):
        response = client.post(url, {"reason": "superseded", "confirm": "yes"})
        assert response.status_code in (302, 403), url
    assert (pki_state()[:2], crl_count()) == before
    for url in [*PUBLIC, _ocsp_get_url(issuing, leaf)]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Set-Cookie" not in response, url  # no session for relying parties
