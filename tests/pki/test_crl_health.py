"""The CRL health page checks the stored bytes themselves (RFC 5280 §6.3.3 as a relying
party would, then the row's own facts): a stored CRL that does not verify is shown as a
problem, not as "verifies"."""

from __future__ import annotations

import html

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki import selectors
from pki.models import RevocationList

pytestmark = pytest.mark.django_db


def newest_complete(ca) -> RevocationList:
    return RevocationList.objects.filter(ca=ca, is_delta=False).order_by("-crl_number").first()


def store(row: RevocationList, der: bytes) -> None:
    RevocationList.objects.filter(pk=row.pk).update(crl_der=der)


def forged_copy(row: RevocationList) -> bytes:
    """The stored CRL's content (issuer, number, dates, entries, extensions) re-signed with
    a key that is not the CA's."""
    stored = x509.load_der_x509_crl(bytes(row.crl_der))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(stored.issuer)
        .last_update(stored.last_update_utc)
        .next_update(stored.next_update_utc)  # type: ignore[arg-type]
    )
    for extension in stored.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    for entry in stored:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def page(operator) -> str:
    response = operator.get("/pki/cas/issuing/crl/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_a_sound_stored_crl_is_shown_as_verifying(issuing, operator) -> None:
    health = selectors.crl_health(ca=issuing)
    assert health.signature_ok is True and health.problem == ""
    body = page(operator)
    assert "verifies</span> with the CA certificate" in body
    assert "The stored CRL is not sound" not in body


def test_a_stored_crl_signed_by_another_key_is_shown_as_a_problem(issuing, operator) -> None:
    row = newest_complete(issuing)
    store(row, forged_copy(row))
    health = selectors.crl_health(ca=issuing)
    assert health.signature_ok is False
    assert health.problem == (
        "the stored CRL cannot be relied on: the CRL's signature does not verify with the CA's key"
    )
    body = page(operator)
    assert f"The stored CRL is not sound:</strong> {health.problem}" in body
    assert '<span class="badge bad">problem</span>' in body
    assert "verifies</span> with the CA certificate" not in body


def test_stored_bytes_that_are_not_a_crl_are_shown_as_a_problem(issuing, operator) -> None:
    store(newest_complete(issuing), b"\x30\x03\x02\x01\x00")
    health = selectors.crl_health(ca=issuing)
    assert health.signature_ok is False
    assert health.problem.startswith("the stored CRL cannot be relied on: ")
    assert "The stored CRL is not sound:" in page(operator)
