"""The server-identity CA and the `kms-server` profile (issue 13): every issuance path refuses
them, except the one service that issues the KMS's own certificate. Refusals change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pki import services
from pki.errors import PkiError
from pki.models import CertificateAuthority
from pki.ocsp import certificate_status_staple, ocsp_responder_ensure
from tests.key_backends import BOTH_BACKENDS
from tests.pki.conftest import csr_pem, pki_state

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


@pytest.fixture
def server_ca(root: CertificateAuthority) -> CertificateAuthority:
    return services.certificate_authority_create(
        actor=None,
        name="kms-server-identity",
        subject="CN=Server identity CA,O=Example Org",
        parent=root,
        key_type="ecp256",
        server_identity=True,
    )


def _every_issuance(ca: CertificateAuthority, profile: str, key: object) -> list:
    csr = csr_pem(key, "CN=kms.example.org", ("dns:kms.example.org",))
    return [
        lambda: services.certificate_csr_preview(ca=ca, csr_pem_or_der=csr, profile=profile),
        lambda: services.certificate_issue_from_csr(
            actor=None, ca=ca, csr_pem_or_der=csr, profile=profile
        ),
        lambda: services.certificate_generated_preview(
            ca=ca, subject="CN=kms.example.org", sans=["dns:kms.example.org"], profile=profile
        ),
        lambda: services.certificate_issue_generated(
            actor=None,
            ca=ca,
            subject="CN=kms.example.org",
            sans=["dns:kms.example.org"],
            profile=profile,
            pkcs12_password="a long enough password",
            key_type="ecp256",
        ),
    ]


@pytest.mark.parametrize("profile", ["tls-server", "kms-server", "kms-client", "code-signing"])
def test_the_server_identity_ca_issues_nothing_through_the_ordinary_services(
    server_ca: CertificateAuthority, ec_key, profile: str
) -> None:
    before = pki_state()
    for attempt in _every_issuance(server_ca, profile, ec_key):
        with pytest.raises(PkiError, match=r"server-identity CA|kms-server profile is reserved"):
            attempt()
    assert pki_state() == before


def test_no_ca_issues_the_kms_server_profile_through_the_ordinary_services(
    root: CertificateAuthority, issuing: CertificateAuthority, ec_key
) -> None:
    before = pki_state()
    for ca in (root, issuing):
        for attempt in _every_issuance(ca, "kms-server", ec_key):
            with pytest.raises(PkiError, match="kms-server profile is reserved"):
                attempt()
    assert pki_state() == before


def test_a_stale_ca_object_cannot_get_round_the_rule(
    server_ca: CertificateAuthority, ec_key
) -> None:
    stale = CertificateAuthority.objects.get(pk=server_ca.pk)
    stale.server_identity = False  # in memory only: the stored row decides
    with pytest.raises(PkiError, match="server-identity CA"):
        services.certificate_issue_from_csr(
            actor=None, ca=stale, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
        )


def test_no_intermediate_under_the_server_identity_ca(server_ca: CertificateAuthority) -> None:
    before = pki_state()
    with pytest.raises(PkiError, match="server-identity CA"):
        services.certificate_authority_create(
            actor=None, name="sub", subject="CN=Sub,O=Example Org", parent=server_ca
        )
    assert pki_state() == before


def test_there_is_one_server_identity_ca_and_it_is_an_intermediate(
    root: CertificateAuthority, server_ca: CertificateAuthority
) -> None:
    with pytest.raises(PkiError, match="intermediate"):
        services.certificate_authority_create(
            actor=None, name="r2", subject="CN=R2", server_identity=True
        )
    with pytest.raises(Exception):  # noqa: B017 - the database's unique constraint
        services.certificate_authority_create(
            actor=None, name="second", subject="CN=Second", parent=root, server_identity=True
        )


def test_the_server_identity_ca_has_no_delegated_ocsp_responder_and_signs_its_status(
    server_ca: CertificateAuthority, ec_key
) -> None:
    assert ocsp_responder_ensure(ca=server_ca) is None
    record = services.server_identity_certificate_issue(
        ca=server_ca,
        csr_pem_or_der=csr_pem(ec_key, "CN=kms", ("dns:kms.example.org",)),
        subject="CN=kms",
        sans=["dns:kms.example.org", "uri:urn:kmsportal:deployment:x"],
    )
    assert record.profile == "kms-server" and record.ca_id == server_ca.pk
    from cryptography import x509
    from cryptography.x509 import ocsp

    response = ocsp.load_der_ocsp_response(certificate_status_staple(certificate=record))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.certificates == []  # signed by the CA itself
    ca_certificate = x509.load_pem_x509_certificate(server_ca.certificate_pem.encode())
    assert (
        response.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(ca_certificate.public_key()).digest
    )


def test_the_server_identity_service_issues_only_there(
    issuing: CertificateAuthority, ec_key
) -> None:
    with pytest.raises(PkiError, match="server-identity CA only"):
        services.server_identity_certificate_issue(
            ca=issuing, csr_pem_or_der=csr_pem(ec_key), subject="CN=x", sans=[]
        )


def test_cert_issue_refuses_them(
    server_ca: CertificateAuthority, issuing: CertificateAuthority, ec_key, tmp_path: Path
) -> None:
    csr = tmp_path / "req.pem"
    csr.write_bytes(csr_pem(ec_key))
    before = pki_state()
    for ca, profile in ((server_ca.name, "tls-server"), (issuing.name, "kms-server")):
        with pytest.raises(CommandError, match=r"server-identity CA|kms-server profile"):
            call_command("cert_issue", "--ca", ca, "--profile", profile, "--csr", str(csr))
    assert pki_state() == before


def test_the_pages_offer_neither(operator, server_ca: CertificateAuthority) -> None:
    page = operator.get("/pki/issue/").content.decode()
    assert "kms-server-identity" not in page and 'value="kms-server"' not in page
    page = operator.get("/pki/issue/generated/").content.decode()
    assert "kms-server-identity" not in page and 'value="kms-server"' not in page
