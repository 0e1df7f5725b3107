"""The OCSP responder (RFC 6960) at /pki/ocsp/<ca>: GET and POST, good / revoked / unknown
from the database, nonce echoed, the delegated responder certificate the CA issues and
renews itself (and the CA-signed fallback), error statuses; and `openssl ocsp` against a
live server."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.keyring.backends.base import is_key_reference
from kmsportal.keyring.services import sealed_fields, unseal
from pki import services
from pki.models import Certificate, CertificateAuthority, OCSPResponder
from pki.ocsp import RESPONSE_VALIDITY
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_pem

# Signs, seals or destroys: runs on the software and the PKCS#11 (SoftHSM2) key backends.
pytestmark = BOTH_BACKENDS

OCSP_TYPE = "application/ocsp-request"


def issue(ca: CertificateAuthority, key: object, name: str = "www.example.org") -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def request_for(
    record: Certificate,
    issuer: CertificateAuthority,
    *,
    nonce: bytes | None = None,
    serial: int | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """An OCSP request for ``record`` (or, with ``serial``, for that serial number under the
    same issuer, e.g. one the CA never issued)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        cert(record.certificate_pem),
        cert(issuer.certificate_pem),
        algorithm or hashes.SHA1(),  # noqa: S303 - CertID hash used by nearly every client
    )
    if serial is not None:
        probe = builder.build()
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            probe.issuer_name_hash, probe.issuer_key_hash, serial, probe.hash_algorithm
        )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(client: Client, ca: str, body: bytes) -> ocsp.OCSPResponse:
    response = client.post(f"/pki/ocsp/{ca}", body, content_type=OCSP_TYPE)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ocsp-response"
    assert response["Cache-Control"] == "no-store"
    return ocsp.load_der_ocsp_response(response.content)


def assert_signed_by_delegate(answer: ocsp.OCSPResponse, issuer: CertificateAuthority) -> None:
    [responder] = answer.certificates
    ca_certificate = cert(issuer.certificate_pem)
    responder.verify_directly_issued_by(ca_certificate)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert (
        answer.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
    )
    responder.public_key().verify(  # type: ignore[call-arg]
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )


# --- answers --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_good_revoked_and_unknown(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    nonce = os.urandom(16)
    before = timezone.now().replace(microsecond=0)
    good = post(client, "issuing", request_for(record, issuing, nonce=nonce))
    assert good.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert good.serial_number == int(record.serial_hex, 16)
    assert good.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert before <= good.this_update_utc <= timezone.now()
    assert good.next_update_utc == good.this_update_utc + RESPONSE_VALIDITY
    assert_signed_by_delegate(good, issuing)

    services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    record.refresh_from_db()
    revoked = post(client, "issuing", request_for(record, issuing))
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_time_utc == record.revoked_at
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise
    assert list(revoked.extensions) == []  # no nonce asked, none echoed

    unknown = post(client, "issuing", request_for(record, issuing, serial=secrets.randbits(150)))
    assert unknown.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.django_db
def test_hold_then_release(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="certificateHold")
    held = post(client, "issuing", request_for(record, issuing))
    assert held.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert held.revocation_reason == x509.ReasonFlags.certificate_hold
    services.certificate_release(actor=None, certificate=record)
    assert post(client, "issuing", request_for(record, issuing)).certificate_status == (
        ocsp.OCSPCertStatus.GOOD
    )


@pytest.mark.django_db
def test_unspecified_reason_is_left_out(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="unspecified")
    answer = post(client, "issuing", request_for(record, issuing))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is None


@pytest.mark.django_db
def test_the_intermediate_is_answered_by_its_parent(client: Client, root, issuing) -> None:
    record = Certificate.objects.get(ca=root, serial_hex=issuing.serial_hex)
    assert post(client, "root", request_for(record, root)).certificate_status == (
        ocsp.OCSPCertStatus.GOOD
    )
    services.certificate_revoke(actor=None, certificate=record, reason="cACompromise")
    answer = post(client, "root", request_for(record, root))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.ca_compromise


@pytest.mark.django_db
@pytest.mark.parametrize("form", ["url-encoded", "raw", "base64url", "unpadded"])
def test_get_with_the_request_in_the_path(client: Client, issuing, ec_key, form: str) -> None:
    record = issue(issuing, ec_key)
    der = request_for(record, issuing, algorithm=hashes.SHA256())
    text = {
        "url-encoded": quote(base64.b64encode(der).decode(), safe=""),
        "raw": base64.b64encode(der).decode(),
        "base64url": base64.urlsafe_b64encode(der).decode(),
        "unpadded": base64.b64encode(der).decode().rstrip("="),
    }[form]
    response = client.get(f"/pki/ocsp/issuing/{text}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.hash_algorithm.name == "sha256"  # the CertID echoed as asked
    assert response["Cache-Control"].startswith("public, max-age=")


@pytest.mark.django_db
def test_a_get_with_a_nonce_is_not_cacheable(client: Client, issuing, ec_key) -> None:
    der = request_for(issue(issuing, ec_key), issuing, nonce=os.urandom(8))
    response = client.get("/pki/ocsp/issuing/" + quote(base64.b64encode(der).decode(), safe=""))
    assert response["Cache-Control"] == "no-store"


def status_of(response_bytes: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(response_bytes).response_status


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [b"", b"not an OCSP request", b"\x30\x03\x02\x01\x01", os.urandom(200)],
    ids=["empty", "text", "wrong-asn1", "random"],
)
def test_malformed_posts(client: Client, issuing, body: bytes) -> None:
    response = client.post("/pki/ocsp/issuing", body, content_type=OCSP_TYPE)
    assert response.status_code == 200
    assert status_of(response.content) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["", "/", "/!!!not-base64!!!", "/QUJD", "/" + "A" * 10])
def test_malformed_gets(client: Client, issuing, path: str) -> None:
    response = client.get(f"/pki/ocsp/issuing{path}")
    assert response.status_code == 200, path
    assert status_of(response.content) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.django_db
def test_oversized_post_is_malformed_without_being_read(client: Client, issuing) -> None:
    response = client.post("/pki/ocsp/issuing", b"\x30" * 70_000, content_type=OCSP_TYPE)
    assert status_of(response.content) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.django_db
def test_unknown_issuer_is_unauthorized(client: Client, root, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    # Asking the root's responder about a certificate of issuing: not its certificate.
    wrong = client.post("/pki/ocsp/root", request_for(record, issuing), content_type=OCSP_TYPE)
    assert status_of(wrong.content) == ocsp.OCSPResponseStatus.UNAUTHORIZED
    nobody = client.post("/pki/ocsp/nope", request_for(record, issuing), content_type=OCSP_TYPE)
    assert status_of(nobody.content) == ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.django_db
def test_only_get_and_post(client: Client, issuing) -> None:
    assert client.put("/pki/ocsp/issuing", b"x").status_code == 405


@pytest.mark.django_db
def test_the_lookup_is_a_few_indexed_queries(
    client: Client, issuing, ec_key, django_assert_max_num_queries
) -> None:
    record = issue(issuing, ec_key)
    body = request_for(record, issuing)
    post(client, "issuing", body)  # the first request issues the responder
    with django_assert_max_num_queries(3):  # CA, serial status, responder
        post(client, "issuing", body)


# --- the delegated responder ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_ca_issues_its_responder_once_and_seals_its_key(
    client: Client, issuing, ec_key, key_backend_name: str
) -> None:
    record = issue(issuing, ec_key)
    for _ in range(3):
        post(client, "issuing", request_for(record, issuing))
    responder = OCSPResponder.objects.get(ca=issuing)
    row = responder.certificate
    assert (row.profile, row.source, row.ca_id) == ("ocsp-responder", "ocsp", issuing.pk)
    assert (row.not_after - row.not_before) <= timedelta(days=30, minutes=5)
    event = AuditEvent.objects.filter(action="certificate.issued", target_id=str(row.pk)).get()
    assert event.details["profile"] == "ocsp-responder"
    # Sealed with AAD naming the row: it opens there and nowhere else.
    blob = bytes(responder.sealed_private_key)
    assert b"PRIVATE KEY" not in blob
    payload = unseal(blob, aad=responder.aad)
    if key_backend_name == "software":
        serialization.load_der_private_key(payload, password=None)
    else:
        # The key is a non-extractable token object; the row holds a sealed reference.
        assert is_key_reference(payload)
    with pytest.raises(EnvelopeError):
        unseal(blob, aad=issuing.aad)
    assert ("pki.OCSPResponder", "sealed_private_key") in {
        (f.model_label, f.field_name) for f in sealed_fields()
    }


@pytest.mark.django_db
def test_the_responder_is_renewed_near_expiry(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    post(client, "issuing", request_for(record, issuing))
    first = OCSPResponder.objects.get(ca=issuing)
    OCSPResponder.objects.filter(pk=first.pk).update(not_after=timezone.now() + timedelta(days=3))
    answer = post(client, "issuing", request_for(record, issuing))
    second = OCSPResponder.objects.exclude(pk=first.pk).get(ca=issuing)
    assert second.not_after > timezone.now() + timedelta(days=29)
    [embedded] = answer.certificates
    assert embedded.serial_number == int(second.certificate.serial_hex, 16)


@pytest.mark.django_db
def test_a_revoked_responder_is_replaced(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    post(client, "issuing", request_for(record, issuing))
    first = OCSPResponder.objects.get(ca=issuing)
    services.certificate_revoke(actor=None, certificate=first.certificate, reason="keyCompromise")
    answer = post(client, "issuing", request_for(record, issuing))
    assert answer.certificates[0].serial_number != int(first.certificate.serial_hex, 16)
    assert OCSPResponder.objects.filter(ca=issuing).count() == 2


@pytest.mark.django_db
def test_a_ca_that_cannot_issue_signs_its_responses_itself(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key)
    services.certificate_authority_disable(actor=None, ca=issuing)
    answer = post(client, "issuing", request_for(record, issuing))
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.certificates == []
    ca_certificate = cert(issuing.certificate_pem)
    assert (
        answer.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(ca_certificate.public_key()).digest
    )
    assert not OCSPResponder.objects.filter(ca=issuing).exists()


@pytest.mark.django_db
def test_a_broken_key_answers_internal_error(client: Client, issuing, ec_key) -> None:
    from pki.signers import ca_signer_cache_clear

    record = issue(issuing, ec_key)
    CertificateAuthority.objects.filter(pk=issuing.pk).update(sealed_private_key=b"\x02" * 80)
    ca_signer_cache_clear()
    response = client.post(
        "/pki/ocsp/issuing", request_for(record, issuing), content_type=OCSP_TYPE
    )
    assert status_of(response.content) == ocsp.OCSPResponseStatus.INTERNAL_ERROR


# --- openssl ocsp against a live server ------------------------------------------------------


def openssl_ocsp(directory: Path, url: str, leaf: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "ocsp", "-issuer", str(directory / "issuing.pem"),
            "-cert", str(directory / leaf), "-url", url,
            "-CAfile", str(directory / "root.pem"), "-resp_text", "-timeout", "20",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_openssl_ocsp_against_a_live_server(live_server, tmp_path: Path, ec_key) -> None:
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=Live Root", key_type="ecp256"
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Live Issuing", parent=root, key_type="rsa2048"
    )
    record = issue(issuing, ec_key, "live.example.org")
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "issuing.pem").write_text(issuing.certificate_pem)
    (tmp_path / "leaf.pem").write_text(record.certificate_pem)
    url = f"{live_server.url}/pki/ocsp/issuing"

    good = openssl_ocsp(tmp_path, url, "leaf.pem")
    output = good.stdout + good.stderr
    assert good.returncode == 0, output
    assert "Response verify OK" in output
    assert "leaf.pem: good" in output
    assert "OCSP Nonce" in output  # openssl sends one and checks the echo
    assert "This Update:" in output and "Next Update:" in output
    assert "OCSP Signing" in output  # the delegated responder's certificate travels along

    services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    revoked = openssl_ocsp(tmp_path, url, "leaf.pem")
    output = revoked.stdout + revoked.stderr
    assert revoked.returncode == 0, output
    assert "Response verify OK" in output
    assert "leaf.pem: revoked" in output
    assert "Reason: keyCompromise" in output
    assert "Revocation Time:" in output
