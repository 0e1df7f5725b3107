"""Who may use which PKI page: every role against every page, GET and POST.

administrator: reads everything, creates and disables CAs, issues nothing.
CA operator: reads everything, issues. Auditor: reads everything (validation included, it
changes nothing), changes nothing. Key custodian: nothing of the PKI but the public CA
certificate. Anonymous: sign-in first, except the public CA certificate.
"""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from pki import services
from pki.models import Certificate, CertificateAuthority

from .conftest import csr_pem, pki_state

pytestmark = pytest.mark.django_db

ADMIN, OPERATOR, AUDITOR = Role.ADMINISTRATOR, Role.CA_OPERATOR, Role.AUDITOR
READERS = {ADMIN, OPERATOR, AUDITOR}

# page -> roles that get 200 on GET (everyone else: 403; anonymous: redirect to sign-in)
GET_ACCESS: dict[str, set[Role]] = {
    "/pki/": READERS,
    "/pki/cas/issuing/": READERS,
    "/pki/cas/issuing/chain.pem": READERS,
    "/pki/cas/new/": {ADMIN},
    "/pki/cas/issuing/disable/": {ADMIN},
    "/pki/certificates/": READERS,
    "/pki/certificates/{pk}/": READERS,
    "/pki/certificates/{pk}/download/pem/": READERS,
    "/pki/certificates/{pk}/download/der/": READERS,
    "/pki/certificates/{pk}/download/chain/": READERS,
    "/pki/issue/": {OPERATOR},
    "/pki/issue/generated/": {OPERATOR},
    "/pki/validate/": READERS,
}
PUBLIC = ["/pki/ca/issuing.crt", "/pki/ca/issuing.pem"]

# page -> roles allowed to POST (others: 403, and nothing changes)
POST_ACCESS: dict[str, set[Role]] = {
    "/pki/cas/new/": {ADMIN},
    "/pki/cas/issuing/disable/": {ADMIN},
    "/pki/issue/": {OPERATOR},
    "/pki/issue/generated/": {OPERATOR},
    "/pki/validate/": READERS,
}


@pytest.fixture
def leaf(issuing, ec_key) -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )


@pytest.mark.parametrize("role", list(Role))
def test_every_role_on_every_page(role_client, role: Role, leaf: Certificate) -> None:
    client = role_client(role)
    for template, allowed in GET_ACCESS.items():
        url = template.format(pk=leaf.pk)
        expected = 200 if role in allowed else 403
        assert client.get(url).status_code == expected, (role, url)
    for url in PUBLIC:
        assert client.get(url).status_code == 200, (role, url)


@pytest.mark.parametrize("role", list(Role))
def test_posts_without_the_permission_are_refused_and_change_nothing(
    role_client, role: Role, leaf: Certificate, ec_key
) -> None:
    client = role_client(role)
    bodies = {
        "/pki/cas/new/": {"name": "x", "subject": "CN=x", "key_type": "ecp256", "confirm": "yes"},
        "/pki/cas/issuing/disable/": {"reason": "test"},
        "/pki/issue/": {
            "step": "request",
            "csr_text": csr_pem(ec_key).decode(),
            "ca": "issuing",
            "profile": "tls-server",
        },
        "/pki/issue/generated/": {
            "step": "request",
            "ca": "issuing",
            "profile": "tls-server",
            "sans": "dns:a.example.org",
            "key_type": "ecp256",
        },
        "/pki/validate/": {"certificate_text": leaf.certificate_pem, "purpose": "any"},
    }
    for url, allowed in POST_ACCESS.items():
        if role in allowed:
            continue
        before = pki_state()
        response = client.post(url, bodies[url])
        assert response.status_code == 403, (role, url)
        # Nothing changed but the access.denied event the refusal records.
        assert pki_state()[:2] == before[:2]
        denied = AuditEvent.objects.order_by("-sequence").first()
        assert (denied.action, denied.outcome, denied.details["path"]) == (
            "access.denied",
            "denied",
            url,
        )
    assert CertificateAuthority.objects.get(name="issuing").state == "active"


def test_anonymous_is_sent_to_sign_in_except_for_public_certificates(client: Client, leaf) -> None:
    for template in GET_ACCESS:
        response = client.get(template.format(pk=leaf.pk))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], template
    for url in PUBLIC:
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMINISTRATOR])
def test_readers_see_no_issuing_controls(role_client, role: Role, leaf) -> None:
    client = role_client(role)
    pages = [
        client.get(url).content for url in ["/pki/", "/pki/cas/issuing/", "/pki/certificates/"]
    ]
    for content in pages:
        assert b"Issue from CSR" not in content
        assert b"Issue with generated key" not in content
    if role == Role.AUDITOR:
        assert all(b"New CA" not in c and b"Disable" not in c for c in pages)


def test_operator_sees_no_ca_management_controls(role_client, leaf) -> None:
    client = role_client(Role.CA_OPERATOR)
    for url in ["/pki/", "/pki/cas/issuing/"]:
        content = client.get(url).content
        assert b"New CA" not in content and b"Disable" not in content
        assert b"Issue from CSR" in content
