"""An existing CA brought in from elsewhere: its certificate and private key, as PEM/DER files
(the key PKCS#8, possibly encrypted) or one PKCS#12 file, checked the way a new CA is.

Plain functions over bytes; the PKI service decides where the CA goes. Error messages name
the problem, never key bytes or the password.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from kmsportal.crypto.signer import PrivateKey
from kmsportal.crypto.x509 import KeyType

from .errors import KMSError

__all__ = ["CABundle", "CABundleError", "ca_bundle_check", "ca_bundle_load", "ca_pkcs12_load"]


class CABundleError(KMSError, ValueError):
    """The certificate or key cannot be imported as a CA; the message says why."""

    code = "ca_bundle_invalid"
    status = 400


@dataclass(frozen=True)
class CABundle:
    certificate: x509.Certificate
    private_key: PrivateKey
    key_type: KeyType

    @property
    def self_signed(self) -> bool:
        return self.certificate.issuer == self.certificate.subject


def _certificate(data: bytes) -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CABundleError("the certificate is not a PEM or DER X.509 certificate") from None


def _private_key(data: bytes, password: bytes | None) -> object:
    load = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        return load(data, password=password or None)
    except TypeError:
        if password:
            raise CABundleError(
                "the private key is not encrypted; leave the password out"
            ) from None
        raise CABundleError("the private key is encrypted: give its password") from None
    except ValueError:
        raise CABundleError(
            "the private key cannot be read: wrong password, or not a PKCS#8 / traditional "
            "PEM or DER key"
        ) from None


def ca_bundle_load(certificate: bytes, private_key: bytes, password: bytes | None) -> CABundle:
    """Certificate (PEM or DER) and private key (PKCS#8, encrypted or not)."""
    return _bundle(_certificate(certificate), _private_key(private_key, password))


def ca_pkcs12_load(data: bytes, password: bytes | None) -> CABundle:
    """One PKCS#12 file holding the CA certificate and its key."""
    try:
        key, certificate, _others = pkcs12.load_key_and_certificates(data, password or None)
    except ValueError:
        raise CABundleError(
            "the PKCS#12 file cannot be read: wrong password, or not PKCS#12"
        ) from None
    if certificate is None or key is None:
        raise CABundleError("the PKCS#12 file must hold the CA certificate and its private key")
    return _bundle(certificate, key)


def _key_type(key: object) -> KeyType:
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size in (2048, 3072, 4096):
        return KeyType(f"rsa{key.key_size}")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return KeyType.ecp256 if key.curve.name == "secp256r1" else KeyType.ecp384
    raise CABundleError(
        "the CA key must be RSA 2048/3072/4096 or EC P-256/P-384 (the key types this PKI signs with)"
    )


def _bundle(certificate: x509.Certificate, key: object) -> CABundle:
    key_type = _key_type(key)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    if key.public_key() != certificate.public_key():
        raise CABundleError("the private key does not match the certificate's public key")
    return CABundle(certificate, key, key_type)


def ca_bundle_check(bundle: CABundle, *, now: dt.datetime, issuer: x509.Certificate | None) -> None:
    """The checks a new CA passes: a CA certificate (basic constraints CA:TRUE, keyCertSign
    when key usage is present), valid now, signed by itself (a root) or by ``issuer``."""
    certificate = bundle.certificate
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CABundleError("the certificate has no basic constraints: it is not a CA") from None
    if not constraints.ca:
        raise CABundleError("the certificate's basic constraints say CA:FALSE: it is not a CA")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise CABundleError("the certificate's key usage does not allow keyCertSign")
    if certificate.not_valid_before_utc > now:
        raise CABundleError(
            f"the certificate is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if certificate.not_valid_after_utc <= now:
        raise CABundleError(
            f"the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    signer = certificate if bundle.self_signed else issuer
    if signer is None:
        raise CABundleError(
            "the certificate is neither self-signed nor issued by a CA of this portal; import "
            "its issuer first"
        )
    try:
        certificate.verify_directly_issued_by(signer)
    except (ValueError, TypeError, InvalidSignature):
        raise CABundleError(
            "the certificate's signature does not verify with its issuer's key"
        ) from None
