"""Session-wide keys and a small PKI (root → intermediate) for the X.509 tests.

Generating an RSA key costs 60-300 ms, so every key is made once per session. RSA-2048 is
used throughout (RSA-3072, the CA default, is only slower and tests nothing more).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    PROFILES,
    build_ca_certificate,
    build_certificate,
    certificate_to_pem,
    parse_subject,
)

ROOT_CRL_URL = "http://pki.example.org/crl/root.crl"
ROOT_CA_ISSUERS_URL = "http://pki.example.org/ca/root.crt"
ROOT_OCSP_URL = "http://ocsp.example.org/root"
INTERMEDIATE_CRL_URL = "http://pki.example.org/crl/issuing.crl"
INTERMEDIATE_CA_ISSUERS_URL = "http://pki.example.org/ca/issuing.crt"
INTERMEDIATE_OCSP_URL = "http://ocsp.example.org/issuing"


@pytest.fixture(scope="session")
def root_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def intermediate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def leaf_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A fourth RSA key: foreign CAs, re-keyed CAs."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def weak_rsa_key() -> rsa.RSAPrivateKey:
    """RSA-1024: too small for anything here (cheap to generate)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose


@pytest.fixture(scope="session")
def root_signer(root_key: rsa.RSAPrivateKey) -> LoadedKeySigner:
    return LoadedKeySigner(root_key)


@pytest.fixture(scope="session")
def intermediate_signer(intermediate_key: rsa.RSAPrivateKey) -> LoadedKeySigner:
    return LoadedKeySigner(intermediate_key)


@pytest.fixture(scope="session")
def root_cert(root_key: rsa.RSAPrivateKey, root_signer: LoadedKeySigner) -> x509.Certificate:
    return build_ca_certificate(
        subject=parse_subject("CN=Example Root CA,O=Example Org,C=DE"),
        public_key=root_key.public_key(),
        signer=root_signer,
        issuer_certificate=None,
        days=3650,
        path_length=1,
        crl_distribution_url=None,
        ca_issuers_url=None,
        ocsp_url=None,
    )


@pytest.fixture(scope="session")
def intermediate_cert(
    root_cert: x509.Certificate,
    intermediate_key: rsa.RSAPrivateKey,
    root_signer: LoadedKeySigner,
) -> x509.Certificate:
    return build_ca_certificate(
        subject=parse_subject("CN=Example Issuing CA,O=Example Org,C=DE"),
        public_key=intermediate_key.public_key(),
        signer=root_signer,
        issuer_certificate=root_cert,
        days=1825,
        path_length=0,
        crl_distribution_url=ROOT_CRL_URL,
        ca_issuers_url=ROOT_CA_ISSUERS_URL,
        ocsp_url=ROOT_OCSP_URL,
    )


@pytest.fixture(scope="session")
def issue(
    intermediate_cert: x509.Certificate,
    intermediate_signer: LoadedKeySigner,
    leaf_key: rsa.RSAPrivateKey,
) -> Callable[..., x509.Certificate]:
    """Issue a leaf from the intermediate: ``issue("tls-server", "CN=x", [sans], **overrides)``.

    The subject is a string for :func:`parse_subject` or an ``x509.Name``.
    """

    def make(
        profile: str, subject: str | x509.Name, sans: list[x509.GeneralName], **overrides: object
    ) -> x509.Certificate:
        arguments: dict[str, object] = {
            "subject": parse_subject(subject) if isinstance(subject, str) else subject,
            "public_key": leaf_key.public_key(),
            "sans": sans,
            "profile": PROFILES[profile],
            "issuer_certificate": intermediate_cert,
            "signer": intermediate_signer,
            "crl_distribution_url": INTERMEDIATE_CRL_URL,
            "ca_issuers_url": INTERMEDIATE_CA_ISSUERS_URL,
            "ocsp_url": INTERMEDIATE_OCSP_URL,
        }
        arguments.update(overrides)
        return build_certificate(**arguments)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def pki_dir(
    tmp_path_factory: pytest.TempPathFactory,
    root_cert: x509.Certificate,
    intermediate_cert: x509.Certificate,
) -> Path:
    """A directory with root.pem and intermediate.pem, for the openssl CLI."""
    directory = tmp_path_factory.mktemp("pki")
    (directory / "root.pem").write_bytes(certificate_to_pem(root_cert))
    (directory / "intermediate.pem").write_bytes(certificate_to_pem(intermediate_cert))
    return directory


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the openssl CLI; returns the completed process (never raises on exit status)."""

    def run(
        *args: str | Path, input_bytes: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            ["openssl", *map(str, args)],
            input=input_bytes,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode("utf-8", "replace"),
            completed.stderr.decode("utf-8", "replace"),
        )

    return run
