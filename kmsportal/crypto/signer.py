"""The one interface through which CA private keys sign anything.

Certificates, CRLs and OCSP responses are built as unsigned `cryptography` builders and handed
to a `Signer`. Only a signer touches private-key material, so an HSM backend (PKCS#11) can
replace `LoadedKeySigner` without any other change (the django-ca key-backend idea).
"""

from __future__ import annotations

import abc

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Signer(abc.ABC):
    """Signs with one CA key. Implementations never expose the private key."""

    @property
    @abc.abstractmethod
    def public_key(self) -> PublicKey:
        """The public half, for SKI/AKI and for checking signatures."""

    @abc.abstractmethod
    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign a fully built certificate (subject, issuer, validity, extensions set)."""

    @abc.abstractmethod
    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        """Sign a fully built CRL."""

    @abc.abstractmethod
    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, responder_certificate: x509.Certificate
    ) -> ocsp.OCSPResponse:
        """Sign an OCSP response as `responder_certificate` (the CA itself or a delegate)."""


def signature_hash_for(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-256 for RSA and P-256; SHA-384 for P-384 and larger curves."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    return hashes.SHA256()


class LoadedKeySigner(Signer):
    """A signer over a private key object already loaded in memory.

    Load a CA key once per process and keep this object: loading an RSA key costs ~55-365 ms
    (cryptography checks it), signing a certificate with a loaded key ~1.3 ms.
    """

    def __init__(self, private_key: PrivateKey) -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError("only RSA and EC private keys can sign here")
        self._key = private_key
        self._hash = signature_hash_for(private_key)

    def __repr__(self) -> str:
        return f"<LoadedKeySigner {type(self._key).__name__}>"

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, self._hash)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, self._hash)

    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, responder_certificate: x509.Certificate
    ) -> ocsp.OCSPResponse:
        return builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_certificate).sign(
            self._key, self._hash
        )
