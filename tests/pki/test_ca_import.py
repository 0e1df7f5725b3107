"""Importing an existing CA into either key backend, with the checks ca_create makes."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from kmsportal.keyring.backends.base import is_key_reference
from kmsportal.keyring.services import unseal
from pki import services
from pki.ca_import import certificate_authority_import
from pki.errors import PkiError
from pki.models import CertificateAuthority
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_pem, pki_state

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]

PASSWORD = b"import password 7"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def make_ca(
    subject: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = True,
    days: int = 365,
    start: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(subject)
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def test_an_openssl_root_with_an_encrypted_pkcs8_key(
    tmp_path: Path, openssl, key_backend_name: str
) -> None:
    key_file, cert_file, password_file = tmp_path / "key.pem", tmp_path / "ca.pem", tmp_path / "pw"
    password_file.write_bytes(PASSWORD + b"\n")
    assert (
        openssl(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            f"file:{password_file}",
            "-out",
            key_file,
        ).returncode
        == 0
    )
    made = openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        key_file,
        "-passin",
        f"file:{password_file}",
        "-subj",
        "/CN=Imported Root/O=Elsewhere",
        "-days",
        "30",
        "-out",
        cert_file,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    assert made.returncode == 0, made.stderr
    out = run(
        "ca_import",
        "imported",
        "--certificate",
        str(cert_file),
        "--key",
        str(key_file),
        "--password-file",
        str(password_file),
    )
    assert out.startswith("Imported CA imported (root, ecp256): O=Elsewhere,CN=Imported Root")
    ca = CertificateAuthority.objects.get(name="imported")
    payload = unseal(bytes(ca.sealed_private_key), aad=ca.aad)
    assert is_key_reference(payload) == (key_backend_name == "pkcs11")
    event = AuditEvent.objects.get(action="ca.imported")
    assert event.details["key_backend"] == key_backend_name
    assert ca.crls.exists()  # its first CRL, signed by the imported key

    # It signs: a certificate it issues verifies with openssl against the imported file.
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(ec.generate_private_key(ec.SECP256R1())),
        profile="tls-server",
    )
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(record.certificate_pem)
    verified = openssl("verify", "-CAfile", cert_file, leaf)
    assert verified.returncode == 0, verified.stderr


def test_a_pkcs12_intermediate_of_a_portal_ca(root, tmp_path: Path) -> None:
    from pki.signers import ca_signer

    root_key = ca_signer(root)
    # An intermediate whose certificate the portal's root signed elsewhere (an offline
    # ceremony): signed here through the root's signer, then handed over as PKCS#12.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Ceremony Issuing CA")
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.load_pem_x509_certificate(root.certificate_pem.encode()).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    certificate = root_key.sign_certificate(builder)
    bundle = pkcs12.serialize_key_and_certificates(
        b"ceremony",
        key,
        certificate,
        None,
        serialization.BestAvailableEncryption(PASSWORD),
    )
    ca = certificate_authority_import(actor=None, name="ceremony", pkcs12=bundle, password=PASSWORD)
    assert ca.parent == root and ca.path_length == 0
    record = services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(ec.generate_private_key(ec.SECP256R1())),
        profile="tls-server",
    )
    issued = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    issued.verify_directly_issued_by(certificate)


@pytest.mark.parametrize(
    "problem",
    [
        "mismatch",
        "not-a-ca",
        "expired",
        "not-yet",
        "wrong-password",
        "no-password",
        "unknown-issuer",
        "bad-name",
        "duplicate-subject",
    ],
)
def test_refusals_create_nothing(root, problem: str) -> None:
    certificate, key = make_ca("CN=Refused CA")
    password = None
    if problem == "mismatch":
        key = ec.generate_private_key(ec.SECP256R1())
    elif problem == "not-a-ca":
        certificate, key = make_ca("CN=Leaf", ca=False)
    elif problem == "expired":
        certificate, key = make_ca(
            "CN=Old", start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10), days=2
        )
    elif problem == "not-yet":
        certificate, key = make_ca(
            "CN=Future", start=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
        )
    elif problem == "unknown-issuer":
        certificate, key = make_ca("CN=Orphan", issuer=make_ca("CN=Somewhere Else"))
    elif problem == "duplicate-subject":
        certificate, key = make_ca(root.subject)
    encryption = (
        serialization.BestAvailableEncryption(PASSWORD)
        if problem in ("wrong-password", "no-password")
        else serialization.NoEncryption()
    )
    if problem == "wrong-password":
        password = b"not it"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    before = pki_state()
    expected = {
        "mismatch": "does not match the certificate",
        "not-a-ca": "CA:FALSE",
        "expired": "expired on",
        "not-yet": "not valid before",
        "wrong-password": "wrong password",
        "no-password": "give its password",
        "unknown-issuer": "neither self-signed nor issued by a CA of this portal",
        "bad-name": "is not valid",
        "duplicate-subject": "already exists",
    }[problem]
    with pytest.raises(PkiError, match=expected):
        certificate_authority_import(
            actor=None,
            name="Bad Name" if problem == "bad-name" else "refused",
            certificate=certificate.public_bytes(serialization.Encoding.PEM),
            private_key=key_pem,
            password=password,
        )
    assert pki_state() == before


def test_the_command_reports_refusals_as_one_line(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read the certificate .*none\.pem"):
        run("ca_import", "x", "--certificate", str(tmp_path / "none.pem"))
    certificate, _key = make_ca("CN=Half")
    (tmp_path / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CommandError, match="give the CA certificate and its private key"):
        run("ca_import", "x", "--certificate", str(tmp_path / "ca.pem"))
