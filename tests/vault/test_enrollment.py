"""Enrollment at rest and on re-enrollment (issue 13): what the database holds of a pending
token, and the superseded certificate revoked in the same transaction (CRL and OCSP)."""

from __future__ import annotations

import io
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from django.test import Client as HttpClient

from audit.models import AuditEvent
from kmsportal.crypto import protocol
from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
from pki.crl import crl_download_der, crl_download_get
from pki.models import Certificate, CertificateStatus
from pki.ocsp import ocsp_respond
from tests.key_backends import BOTH_BACKENDS
from vault import clients, server_identity
from vault.models import Client

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


@pytest.fixture(autouse=True)
def server(settings) -> None:
    settings.KMS_IDENTITY_CA_KEY_TYPE = "ecp256"
    server_identity.distribution_bootstrap()


def _enroll(token: str) -> tuple[int, dict]:
    key = generate_private_key("ecp256")
    csr = build_csr(private_key=key, subject=parse_subject("CN=x")).decode()
    body, state = protocol.build_enroll_request(token=token, csr_pem=csr)
    response = HttpClient().post(
        "/api/v1/enroll", json.dumps(body), content_type="application/json"
    )
    if response.status_code == 201:
        opened = protocol.open_enroll_response(state=state, response=response.json())
        return 201, opened.members
    return response.status_code, response.json()


def test_the_database_holds_neither_the_token_nor_a_usable_key() -> None:
    client, token = clients.client_create(actor=None, name="billing")
    token_id, mac_key = protocol.enrollment_token_keys(token)
    row = Client.objects.get(pk=client.pk)
    assert row.enrollment_token_hash == protocol.enrollment_token_lookup(token_id)
    stored = bytes(row.enrollment_mac_key_sealed)
    assert token.encode() not in stored and bytes.fromhex(token) not in stored
    assert mac_key not in stored and token_id.encode() not in stored
    # Copied to another pending row, the sealed key does not open (AAD names row and token).
    other, _other_token = clients.client_create(actor=None, name="reporting")
    Client.objects.filter(pk=other.pk).update(
        enrollment_token_hash=row.enrollment_token_hash, enrollment_mac_key_sealed=stored
    )
    Client.objects.filter(pk=client.pk).update(enrollment_token_hash="")
    status, body = _enroll(token)
    assert (status, body["code"]) == (500, "integrity_error")
    assert Client.objects.get(pk=other.pk).certificate is None


def test_the_answer_pins_the_server_identity() -> None:
    _client, token = clients.client_create(actor=None, name="billing")
    status, answer = _enroll(token)
    assert status == 201
    pin = server_identity.server_identity_pin()
    assert answer["server_identity"] == pin.as_json()
    leaf = x509.load_pem_x509_certificate(answer["server_certificate_chain"][0].encode())
    uris = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert pin.deployment in uris


def test_re_enrollment_revokes_the_superseded_certificate_for_crl_and_ocsp() -> None:
    client, token = clients.client_create(actor=None, name="billing")
    assert _enroll(token)[0] == 201
    first = Client.objects.get(pk=client.pk).certificate
    token = clients.client_enrollment_token_renew(actor=None, client=client)
    assert _enroll(token)[0] == 201
    second = Client.objects.get(pk=client.pk).certificate
    assert second.pk != first.pk
    first.refresh_from_db()
    assert first.status == CertificateStatus.REVOKED
    assert first.revocation_reason == "superseded"
    assert second.status == CertificateStatus.VALID

    ca = first.ca
    # A revocation publishes the CA's delta CRL (issue 18); the complete CRL follows later.
    download = crl_download_get(ca_name=ca.name, delta=True)
    crl = x509.load_der_x509_crl(crl_download_der(download=download))
    entry = crl.get_revoked_certificate_by_serial_number(int(first.serial_hex, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.superseded
    )
    leaf = x509.load_pem_x509_certificate(first.certificate_pem.encode())
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
    answer = ocsp.load_der_ocsp_response(
        ocsp_respond(
            ca_name=ca.name, request_der=request.public_bytes(serialization.Encoding.DER)
        ).der
    )
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.superseded
    enrolled = AuditEvent.objects.filter(action="client.enrolled").order_by("-sequence").first()
    assert enrolled.details["superseded"] == first.serial_hex


def test_a_refused_enrollment_revokes_nothing() -> None:
    client, token = clients.client_create(actor=None, name="billing")
    assert _enroll(token)[0] == 201
    first = Client.objects.get(pk=client.pk).certificate
    token = clients.client_enrollment_token_renew(actor=None, client=client)
    body, _state = protocol.build_enroll_request(token=token, csr_pem="not a csr")
    response = HttpClient().post(
        "/api/v1/enroll", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "bad_csr"
    assert Certificate.objects.get(pk=first.pk).status == CertificateStatus.VALID


def test_a_deployment_from_before_gets_its_server_identity_on_the_next_bootstrap(settings) -> None:
    """As after the upgrade: no server-identity CA, no deployment id, a server certificate
    from another CA. `bootstrap` (and `server_cert_renew`) create both and re-issue it."""
    from django.core.management import call_command

    from pki.models import CertificateAuthority
    from vault.models import Deployment, ServerIdentity

    before = server_identity.server_identity_pin()
    CertificateAuthority.objects.filter(server_identity=True).update(
        server_identity=False, name="former-server-ca"
    )
    Deployment.objects.all().delete()
    assert server_identity.server_identity_pin() is None
    done = server_identity.distribution_bootstrap()
    assert any("created the server-identity CA" in line for line in done)
    assert any("issued the KMS server certificate" in line for line in done)
    after = server_identity.server_identity_pin()
    assert after is not None and after != before
    newest = ServerIdentity.objects.select_related("certificate__ca").first()
    assert newest.certificate.ca.server_identity
    assert f"uri:{after.deployment}" in newest.certificate.san_list
    assert server_identity.distribution_bootstrap() == []  # idempotent

    call_command("server_cert_renew", stdout=io.StringIO())
    assert ServerIdentity.objects.count() == 3
    assert server_identity.server_identity_pin() == after  # the pin survives a renewal


def test_report_refusals_command() -> None:
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from vault.models import RefusalTally

    RefusalTally.objects.create(
        source="192.0.2.9", minute=timezone.now() - timedelta(minutes=2), count=7,
        codes={"bad_signature": 7},
    )  # fmt: skip
    out = io.StringIO()
    call_command("report_refusals", stdout=out)
    assert "Reported 1 " in out.getvalue()
    event = AuditEvent.objects.get(action="api.requests_refused")
    assert event.details["count"] == 7 and event.details["source"] == "192.0.2.9"
