"""PKI test fixtures: session-scoped leaf keys, CSR builders, and a small per-test PKI.

Test CAs use EC P-256 keys (generated in well under a millisecond), so every test can build
its own root → intermediate without RSA key generation; RSA appears only where it is the
point (RSA CSRs, the RSA-3072 default of `ca_create`, the interoperability test's RSA CA).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.crypto.x509 import parse_san, parse_subject
from pki import services
from pki.models import Certificate, CertificateAuthority


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def weak_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose


def csr_pem(
    key: object,
    subject: str = "CN=www.example.org,O=Example Org",
    sans: tuple[str, ...] = ("dns:www.example.org",),
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A PEM CSR signed by ``key`` (SHA-256 unless given; None-hash keys are not used)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_subject(subject))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([parse_san(s) for s in sans]), critical=False
        )
    csr = builder.sign(key, algorithm or hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def root(db) -> CertificateAuthority:
    return services.certificate_authority_create(
        actor=None, name="root", subject="CN=Test Root CA,O=Example Org", key_type="ecp256"
    )


@pytest.fixture
def issuing(root: CertificateAuthority) -> CertificateAuthority:
    return services.certificate_authority_create(
        actor=None,
        name="issuing",
        subject="CN=Test Issuing CA,O=Example Org",
        parent=root,
        key_type="ecp256",
    )


@pytest.fixture
def operator(make_user, signed_in):
    return signed_in(make_user("carol-operator", Role.CA_OPERATOR))


@pytest.fixture
def administrator(make_user, signed_in):
    return signed_in(make_user("adam-admin", Role.ADMINISTRATOR))


def pki_state() -> tuple[int, int, int]:
    """Row counts that a refused action must leave unchanged: CAs, certificates, events."""
    return (
        CertificateAuthority.objects.count(),
        Certificate.objects.count(),
        AuditEvent.objects.count(),
    )


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the openssl CLI (never raises on exit status)."""

    def run(
        *args: str | Path, input_bytes: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["openssl", *map(str, args)],
            input=input_bytes,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    return run
