"""Issuance through the services, checked by tools we did not write (OpenSSL, cryptography's
RFC 5280 verifier), and the service-level rules: overrides, clipping, serial uniqueness."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.crypto.profiles import PROFILES
from kmsportal.crypto.validation import CHECK_NAMES
from pki import services
from pki.models import Certificate, CertificateAuthority
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_der, csr_pem, pki_state

# Signs, seals or destroys: runs on the software and the PKCS#11 (SoftHSM2) key backends.
pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]

# profile, subject, SANs, openssl -purpose (None: plain verify only)
LEAF_CASES = [
    ("tls-server", "CN=www.example.org", ("dns:www.example.org", "ip:192.0.2.10"), "sslserver"),
    ("tls-client", "CN=alice,O=Example Org", ("email:alice@example.org",), "sslclient"),
    ("kms-client", "CN=app-7", ("uri:https://kms.example.org/clients/7",), "sslclient"),
    ("kms-server", "CN=kms.example.org", ("dns:kms.example.org",), "sslserver"),
    ("email", "CN=Alice,emailAddress=alice@example.org", ("email:alice@example.org",), "smimesign"),
    ("code-signing", "CN=Example Release Signing,O=Example Org", (), None),
    ("ocsp-responder", "CN=Example OCSP Responder", (), None),
]


@pytest.fixture
def rsa_pki(db) -> tuple[CertificateAuthority, CertificateAuthority]:
    """An RSA-2048 root over an EC P-256 intermediate: both signature kinds in every chain."""
    root = services.certificate_authority_create(
        actor=None, name="rsa-root", subject="CN=Interop Root,O=Example Org", key_type="rsa2048"
    )
    issuing = services.certificate_authority_create(
        actor=None,
        name="interop",
        subject="CN=Interop Issuing CA,O=Example Org",
        parent=root,
        key_type="ecp256",
    )
    return root, issuing


@pytest.mark.parametrize(("profile", "subject", "sans", "purpose"), LEAF_CASES)
@pytest.mark.parametrize("leaf_key", ["rsa_key", "ec_key"])
def test_every_profile_verifies_with_openssl(
    rsa_pki,
    request: pytest.FixtureRequest,
    openssl: Callable,
    tmp_path: Path,
    profile: str,
    subject: str,
    sans: tuple[str, ...],
    purpose: str | None,
    leaf_key: str,
) -> None:
    root, issuing = rsa_pki
    csr = csr_pem(request.getfixturevalue(leaf_key), subject, sans)
    if profile == "kms-server":
        # Only a deployment's server-identity CA issues this profile, through its own path.
        CertificateAuthority.objects.filter(pk=issuing.pk).update(server_identity=True)
        record = services.server_identity_certificate_issue(
            ca=issuing, csr_pem_or_der=csr, subject=subject, sans=list(sans)
        )
    else:
        record = services.certificate_issue_from_csr(
            actor=None, ca=issuing, csr_pem_or_der=csr, profile=profile
        )
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "intermediate.pem").write_text(issuing.certificate_pem)
    (tmp_path / "leaf.pem").write_text(record.certificate_pem)
    base = [
        "verify",
        "-x509_strict",
        "-CAfile",
        tmp_path / "root.pem",
        "-untrusted",
        tmp_path / "intermediate.pem",
    ]
    plain = openssl(*base, tmp_path / "leaf.pem")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.strip().endswith(": OK")
    assert plain.stderr == ""  # no warnings either
    if purpose:
        with_purpose = openssl(*base, "-purpose", purpose, tmp_path / "leaf.pem")
        assert with_purpose.stdout.strip().endswith(": OK"), with_purpose.stderr
    text = openssl("x509", "-in", tmp_path / "leaf.pem", "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "CA:FALSE" in text.stdout
    assert "URI:http://testserver/pki/crl/interop.crl" in text.stdout
    assert "CA Issuers - URI:http://testserver/pki/ca/interop.crt" in text.stdout
    if not PROFILES[profile].ocsp_no_check:
        assert "OCSP - URI:http://testserver/pki/ocsp/interop" in text.stdout
    assert "Signature Algorithm: ecdsa-with-SHA256" in text.stdout
    # The row matches the certificate.
    cert = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    assert record.serial_hex == format(cert.serial_number, "040X")
    assert 64 <= cert.serial_number.bit_length() <= 159
    assert record.san_list == list(sans)
    assert record.profile == profile and record.source == "csr"
    assert bytes(record.certificate_der) == cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("profile", "purpose", "sans", "hostname"),
    [
        ("tls-server", "server", ("dns:www.example.org",), "www.example.org"),
        ("tls-server", "server", ("dns:kms.example.org", "ip:192.0.2.7"), "192.0.2.7"),
        ("tls-client", "client", ("email:alice@example.org",), None),
        ("kms-client", "client", ("uri:https://kms.example.org/clients/7",), None),
    ],
)
def test_cryptography_verifier_accepts_server_and_client_certificates(
    issuing, ec_key, profile: str, purpose: str, sans: tuple[str, ...], hostname: str | None
) -> None:
    record = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key, "CN=x", sans), profile=profile
    )
    outcome = services.certificate_validate(
        actor=None, pem_data=record.certificate_pem.encode(), purpose=purpose, hostname=hostname
    )
    report = outcome.report
    assert report.ok, report.checks
    assert report.cross_checked and report.verifier_error is None
    expected = {name: True for name in CHECK_NAMES}
    expected["hostname"] = bool(hostname) or None
    assert {c.name: c.passed for c in report.checks} == expected
    assert [p.ca_name for p in outcome.path] == [None, "issuing", "root"]
    assert outcome.issued_here == record


def test_validation_names_the_failed_check(issuing, ec_key) -> None:
    server = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    wrong_host = services.certificate_validate(
        actor=None, pem_data=server.certificate_pem.encode(), purpose="server", hostname="evil.org"
    ).report
    assert not wrong_host.ok
    assert [c.name for c in wrong_host.failed] == ["hostname"]
    as_client = services.certificate_validate(
        actor=None, pem_data=bytes(server.certificate_der), purpose="client"
    ).report
    assert [c.name for c in as_client.failed] == ["key usage and EKU"]
    Certificate.objects.filter(pk=server.pk).update(
        status="revoked", revocation_reason="keyCompromise"
    )
    revoked = services.certificate_validate(
        actor=None, pem_data=server.certificate_pem.encode(), purpose="server"
    ).report
    assert [c.name for c in revoked.failed] == ["revocation"]
    assert "(reason: keyCompromise)" in revoked.check("revocation").detail


def test_a_foreign_certificate_has_no_path(issuing, rsa_key) -> None:
    name = x509.Name.from_rfc4514_string("CN=Elsewhere")
    now = datetime.now(UTC)
    foreign = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(rsa_key, hashes.SHA256())
    )
    outcome = services.certificate_validate(
        actor=None, pem_data=foreign.public_bytes(serialization.Encoding.PEM), purpose="any"
    )
    assert not outcome.report.ok
    assert (
        outcome.report.check("path").detail
        == "'CN=Elsewhere' is self-signed but is not one of the trust roots"
    )
    assert outcome.issued_here is None


def test_subject_and_sans_can_be_replaced_by_the_operator(issuing, ec_key) -> None:
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr_pem(ec_key, "CN=requested", ("dns:requested.example.org",)),
        profile="tls-server",
        subject_override="CN=Zoë Ødegård,O=Bücher & Söhne",
        sans_override=["dns:approved.example.org", "dns:www.approved.example.org"],
    )
    cert = x509.load_der_x509_certificate(bytes(record.certificate_der))
    assert cert.subject.rfc4514_string() == "CN=Zoë Ødegård,O=Bücher & Söhne"
    assert record.subject == "CN=Zoë Ødegård,O=Bücher & Söhne"
    assert record.san_list == ["dns:approved.example.org", "dns:www.approved.example.org"]


def test_an_unchanged_subject_keeps_the_csrs_encoding(issuing, ec_key) -> None:
    # DC is not an attribute the subject parser accepts; an unchanged subject is kept as is.
    name = x509.Name.from_rfc4514_string("CN=host,DC=example,DC=org")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("host.example.org")]), False)
        .sign(ec_key, hashes.SHA256())
    )
    preview = services.certificate_csr_preview(
        ca=issuing,
        csr_pem_or_der=csr.public_bytes(serialization.Encoding.PEM),
        profile="tls-server",
    )
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=preview.csr_pem.encode(),
        profile="tls-server",
        subject_override=preview.subject,
        sans_override=preview.sans,
    )
    assert x509.load_der_x509_certificate(bytes(record.certificate_der)).subject == name


def test_der_csr_and_an_empty_subject_with_sans(issuing, ec_key) -> None:
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr_der(csr_pem(ec_key)),
        profile="tls-server",
        subject_override="",
    )
    cert = x509.load_der_x509_certificate(bytes(record.certificate_der))
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_validity_is_clipped_to_the_ca(root, ec_key) -> None:
    short = services.certificate_authority_create(
        actor=None, name="short", subject="CN=Short", parent=root, key_type="ecp256", days=30
    )
    record = services.certificate_issue_from_csr(
        actor=None, ca=short, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    assert record.not_after == short.not_after


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"profile": "sub-ca"}, "sub-ca is a CA certificate, not a leaf profile"),
        ({"profile": "nope"}, "unknown certificate profile 'nope'"),
        ({"days": 201}, "the tls-server profile allows at most 200 days; 201 days were requested"),
        (
            {"sans_override": ["email:a@example.org"]},
            "the tls-server profile does not allow email addresses as SAN",
        ),
        (
            {"sans_override": []},
            "the tls-server profile requires at least one subject alternative name",
        ),
        ({"sans_override": ["dns:bad..name"]}, "it has an empty label"),
        (
            {"subject_override": "CN=x,C=Germany"},
            "the country (C) must be a two-letter ISO 3166 code",
        ),
    ],
)
def test_issuance_refusals_create_nothing(issuing, ec_key, overrides: dict, message: str) -> None:
    arguments = {"csr_pem_or_der": csr_pem(ec_key), "profile": "tls-server", **overrides}
    before = pki_state()
    with pytest.raises(services.PkiError) as caught:
        services.certificate_issue_from_csr(actor=None, ca=issuing, **arguments)
    assert message in str(caught.value)
    assert pki_state() == before


def test_a_duplicate_serial_is_retried_with_a_fresh_one(issuing, ec_key, monkeypatch) -> None:
    first = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    taken = int(first.serial_hex, 16)
    draws = iter([taken, taken, taken + 1])
    monkeypatch.setattr(services.records, "new_serial_number", lambda: next(draws))
    second = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    assert int(second.serial_hex, 16) == taken + 1
    cert = x509.load_der_x509_certificate(bytes(second.certificate_der))
    assert cert.serial_number == taken + 1  # the stored row is the certificate signed last
    assert Certificate.objects.filter(ca=issuing).count() == 2
    # The same serial under another CA is fine: uniqueness is per issuer.
    draws = iter([taken])
    other = services.certificate_authority_create(
        actor=None, name="other", subject="CN=Other", key_type="ecp256"
    )
    elsewhere = services.certificate_issue_from_csr(
        actor=None, ca=other, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    assert elsewhere.serial_hex == first.serial_hex


def test_a_serial_that_never_comes_free_fails_cleanly(issuing, ec_key, monkeypatch) -> None:
    first = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    monkeypatch.setattr(
        services.records, "new_serial_number", itertools.repeat(int(first.serial_hex, 16)).__next__
    )
    before = pki_state()
    with pytest.raises(services.PkiError, match="no unused serial number was found for CA issuing"):
        services.certificate_issue_from_csr(
            actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
        )
    assert pki_state() == before


def test_issuance_is_audited_without_secrets(issuing, ec_key, make_user) -> None:
    operator = make_user("olga", Role.CA_OPERATOR)
    record = services.certificate_issue_from_csr(
        actor=operator, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_name, event.target_type, event.target_id) == (
        "certificate.issued",
        "olga",
        "pki.Certificate",
        str(record.pk),
    )
    assert event.details == {
        "ca": "issuing",
        "subject": "CN=www.example.org,O=Example Org",
        "sans": ["dns:www.example.org"],
        "serial": record.serial_number_display,
        "profile": "tls-server",
        "not_after": record.not_after.isoformat(),
        "fingerprint": record.fingerprint_sha256,
        "source": "csr",
    }
    assert record.issued_by == operator and record.issued_by_name == "olga"


def test_eku_of_each_profile_is_in_the_certificate(issuing, ec_key) -> None:
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr_pem(ec_key, "CN=signer", ()),
        profile="code-signing",
    )
    cert = x509.load_der_x509_certificate(bytes(record.certificate_der))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]
