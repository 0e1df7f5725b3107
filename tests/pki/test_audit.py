"""What the PKI writes to the audit log: CA creation and disabling, every issuance, every
delivery of a generated key; never a key or a password."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from audit.checking import audit_chain_check
from audit.models import AuditEvent
from pki import services
from pki.models import CertificateAuthority

from .conftest import csr_pem

pytestmark = pytest.mark.django_db

PASSWORD = "Never-In-The-Audit-Log 77"


def all_audit_text() -> str:
    return "\n".join(
        json.dumps(row, default=str, ensure_ascii=False) for row in AuditEvent.objects.values()
    )


def test_ca_creation_is_audited(administrator: Client, root) -> None:
    form = {
        "name": "issuing",
        "subject": "CN=Issuing,O=Example",
        "parent": "root",
        "key_type": "ecp256",
        "confirm": "yes",
    }
    assert administrator.post("/pki/cas/new/", form).status_code == 302
    event = AuditEvent.objects.filter(action="ca.created").order_by("-sequence").first()
    ca = CertificateAuthority.objects.get(name="issuing")
    assert (event.actor_name, event.target_type, event.target_id, event.target_label) == (
        "adam-admin",
        "pki.CertificateAuthority",
        str(ca.pk),
        "issuing",
    )
    assert event.details == {
        "name": "issuing",
        "subject": "CN=Issuing,O=Example",
        "parent": "root",
        "key_type": "ecp256",
        "serial": ca.serial_number_display,
        "not_after": ca.not_after.isoformat(),
        "path_length": 0,
        "fingerprint": ca.fingerprint_sha256,
    }
    assert event.source_ip == "127.0.0.1"


def test_generated_key_delivery_is_audited_without_the_password(operator: Client, issuing) -> None:
    response = operator.post(
        "/pki/issue/generated/",
        {
            "step": "issue",
            "ca": "issuing",
            "profile": "tls-client",
            "subject": "CN=laptop-42",
            "sans": "",
            "key_type": "ecp256",
            "days": "",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "delivery": "pkcs12",
            "idempotency_token": "audit-test-token-0001",
        },
    )
    assert response.status_code == 302
    issued, delivered = AuditEvent.objects.order_by("sequence").reverse()[:2][::-1]
    assert issued.action == "certificate.issued" and issued.details["source"] == "generated"
    assert delivered.action == "certificate.key_delivered"
    assert delivered.actor_name == "carol-operator"
    assert delivered.details == {
        "ca": "issuing",
        "serial": issued.details["serial"],
        "fingerprint": issued.details["fingerprint"],
        "key_type": "ecp256",
        "format": "PKCS#12",
    }
    assert PASSWORD not in all_audit_text()
    assert audit_chain_check().ok


def test_a_refused_password_leaves_no_trace(operator: Client, issuing) -> None:
    before = AuditEvent.objects.count()
    response = operator.post(
        "/pki/issue/generated/",
        {
            "step": "issue",
            "ca": "issuing",
            "profile": "tls-client",
            "subject": "CN=x",
            "key_type": "ecp256",
            "password1": PASSWORD,
            "password2": PASSWORD + "!",
            "delivery": "pkcs12",
        },
    )
    assert response.status_code == 400
    assert AuditEvent.objects.count() == before
    assert PASSWORD not in all_audit_text()


def test_every_issuance_is_one_event_in_its_transaction(issuing, ec_key) -> None:
    before = AuditEvent.objects.filter(action="certificate.issued").count()
    for _ in range(3):
        services.certificate_issue_from_csr(
            actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
        )
    assert AuditEvent.objects.filter(action="certificate.issued").count() == before + 3
