"""Certificate authorities through the service: roots, intermediates, refusals, disabling."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from audit.models import AuditEvent
from kmsportal.crypto.x509 import builders, describe_certificate
from kmsportal.crypto.x509.builders import CLOCK_SKEW
from pki import services
from pki.models import CAState, Certificate, CertificateAuthority, CertificateSource
from tests.key_backends import BOTH_BACKENDS

from .conftest import pki_state

# Signs, seals or destroys: runs on the software and the PKCS#11 (SoftHSM2) key backends.
pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def loaded(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_der_x509_certificate(bytes(ca.certificate_der))


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def test_root_is_self_signed_with_critical_ca_extensions(root: CertificateAuthority) -> None:
    cert = loaded(root)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.CRLDistributionPoints)
    # The row describes the certificate it holds.
    assert root.subject == "CN=Test Root CA,O=Example Org"
    assert root.serial_hex == format(cert.serial_number, "040X")
    assert root.not_after == cert.not_valid_after_utc
    assert (root.not_after - root.not_before).days == services.DEFAULT_ROOT_DAYS
    assert root.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert root.state == CAState.ACTIVE and root.parent is None
    # A self-signed root issued itself: it is nobody's certificate-list entry.
    assert not Certificate.objects.exists()


def test_intermediate_points_at_its_parent_and_is_recorded_under_it(
    root: CertificateAuthority, issuing: CertificateAuthority
) -> None:
    cert = loaded(issuing)
    cert.verify_directly_issued_by(loaded(root))
    assert ext(cert, x509.BasicConstraints).value.path_length == 0
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(loaded(root), x509.SubjectKeyIdentifier).value.digest
    )
    cdp = ext(cert, x509.CRLDistributionPoints).value
    assert [u.value for u in cdp[0].full_name] == ["http://testserver/pki/crl/root.crl"]
    aia = {
        d.access_method: d.access_location.value
        for d in ext(cert, x509.AuthorityInformationAccess).value
    }
    assert aia[AuthorityInformationAccessOID.CA_ISSUERS] == "http://testserver/pki/ca/root.crt"
    assert aia[AuthorityInformationAccessOID.OCSP] == "http://testserver/pki/ocsp/root"
    assert issuing.parent == root and issuing.path_length == 0
    # The parent's certificate list holds the intermediate's certificate (serial unique per
    # issuer covers CA certificates too; the revocation issue lists it in the parent's CRL).
    record = Certificate.objects.get(ca=root, serial_hex=issuing.serial_hex)
    assert (record.profile, record.source) == ("sub-ca", CertificateSource.CA)
    assert record.fingerprint_sha256 == issuing.fingerprint_sha256


def test_intermediate_default_validity_never_outlives_the_parent(db) -> None:
    short_root = services.certificate_authority_create(
        actor=None, name="short", subject="CN=Short Root", key_type="ecp256", days=100
    )
    child = services.certificate_authority_create(
        actor=None, name="child", subject="CN=Child", parent=short_root, key_type="ecp256"
    )
    assert child.not_after <= short_root.not_after
    assert short_root.not_after - child.not_after < timedelta(days=1)


def test_default_validity_signed_after_a_clock_tick_ends_with_the_parent(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default is planned from the clock before the key is made; signing may come a
    second later (seen in CI). The intermediate then ends with its parent, not refused."""
    short_root = services.certificate_authority_create(
        actor=None, name="short", subject="CN=Short Root", key_type="ecp256", days=100
    )
    real_now = builders._utcnow
    # Planning sees the root's own second (100 whole days left); signing sees 2 s later.
    monkeypatch.setattr("pki.services.cas.timezone.now", lambda: short_root.not_before + CLOCK_SKEW)
    monkeypatch.setattr(builders, "_utcnow", lambda: real_now() + timedelta(seconds=2))
    child = services.certificate_authority_create(
        actor=None, name="child", subject="CN=Child", parent=short_root, key_type="ecp256"
    )
    assert child.not_after == short_root.not_after


def test_an_intermediate_that_would_outlive_its_parent_is_refused(db) -> None:
    short_root = services.certificate_authority_create(
        actor=None, name="short", subject="CN=Short Root", key_type="ecp256", days=100
    )
    before = pki_state()
    with pytest.raises(services.PkiError) as caught:
        services.certificate_authority_create(
            actor=None,
            name="too-long",
            subject="CN=Too Long",
            parent=short_root,
            key_type="ecp256",
            days=200,
        )
    message = str(caught.value)
    assert "after its parent CA" in message
    assert re.search(r"choose at most (99|100) days$", message)
    assert pki_state() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Root CA"}, "the CA name 'Root CA' is not valid: Use 1-64 lower-case"),
        ({"name": "new"}, "'new' is a reserved word"),
        ({"name": "root"}, "a CA named 'root' already exists"),
        ({"subject": "CN=Test Root CA,O=Example Org"}, "a CA with the subject"),
        ({"subject": ""}, "the subject is empty"),
        ({"subject": "XX=nope"}, "unknown attribute 'XX' in the subject"),
        ({"key_type": "dsa1024"}, "unknown key type 'dsa1024'"),
        ({"days": 0}, "the validity must be between 1 and 36500 days, not 0"),
        ({"path_length": -1}, "the path length must be between 0 and 10"),
    ],
)
def test_bad_ca_requests_are_refused_and_create_nothing(
    root: CertificateAuthority, overrides: dict, message: str
) -> None:
    arguments = {"name": "second", "subject": "CN=Second Root", "key_type": "ecp256", **overrides}
    before = pki_state()
    with pytest.raises(services.PkiError) as caught:
        services.certificate_authority_create(actor=None, **arguments)
    assert message in str(caught.value)
    assert pki_state() == before


def test_path_length_must_fit_under_the_parent(root: CertificateAuthority) -> None:
    limited = services.certificate_authority_create(
        actor=None,
        name="limited",
        subject="CN=Limited",
        parent=root,
        key_type="ecp256",
        path_length=0,
    )
    before = pki_state()
    with pytest.raises(services.PkiError, match="has path length 0, so it cannot issue"):
        services.certificate_authority_create(
            actor=None, name="below", subject="CN=Below", parent=limited, key_type="ecp256"
        )
    assert pki_state() == before


def test_a_disabled_ca_signs_nothing(root: CertificateAuthority, issuing) -> None:
    services.certificate_authority_disable(actor=None, ca=issuing, reason="moved to a new CA")
    issuing.refresh_from_db()
    assert issuing.state == CAState.DISABLED and issuing.disabled_at is not None
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.target_label) == ("ca.disabled", "issuing")
    assert event.details["reason"] == "moved to a new CA"
    before = pki_state()
    with pytest.raises(services.PkiError, match="CA issuing is disabled; it cannot issue"):
        services.certificate_generated_preview(
            ca=issuing, subject="CN=x", sans=["dns:x.example.org"], profile="tls-server"
        )
    with pytest.raises(services.PkiError, match="only an active CA can be disabled"):
        services.certificate_authority_disable(actor=None, ca=issuing)
    services.certificate_authority_disable(actor=None, ca=root)
    before = pki_state()
    with pytest.raises(services.PkiError, match="the parent CA root is disabled"):
        services.certificate_authority_create(
            actor=None, name="late", subject="CN=Late", parent=root, key_type="ecp256"
        )
    assert pki_state() == before


def test_non_ascii_names_work(db) -> None:
    ca = services.certificate_authority_create(
        actor=None,
        name="zuerich",
        subject="CN=Zürich Wurzel-CA,O=Müller & Söhne GmbH,C=CH",
        key_type="ecp256",
    )
    assert ca.subject == "CN=Zürich Wurzel-CA,O=Müller & Söhne GmbH,C=CH"
    assert loaded(ca).subject.rfc4514_string() == ca.subject


def test_default_key_is_rsa_3072(db) -> None:
    ca = services.certificate_authority_create(actor=None, name="big", subject="CN=Big Root")
    key = loaded(ca).public_key()
    assert ca.key_type == "rsa3072"
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072


def test_preview_changes_nothing_and_matches_the_result(root: CertificateAuthority) -> None:
    before = pki_state()
    preview = services.certificate_authority_preview(
        name="issuing-2", subject="CN=Issuing 2", parent=root, key_type="ecp256", days=365
    )
    assert pki_state() == before
    created = services.certificate_authority_create(
        actor=None,
        name="issuing-2",
        subject="CN=Issuing 2",
        parent=root,
        key_type="ecp256",
        days=365,
    )
    actual = describe_certificate(loaded(created))
    same = ["subject", "issuer", "key_usage", "basic_constraints", "crl_distribution_points"]
    assert {f: getattr(preview.summary, f) for f in same} == {f: getattr(actual, f) for f in same}
    assert abs(preview.summary.not_after - actual.not_after) < timedelta(minutes=1)
