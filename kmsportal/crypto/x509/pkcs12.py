"""PKCS#12 export of a key, its certificate and the CA chain."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from kmsportal.crypto.signer import PrivateKey
from kmsportal.crypto.x509.errors import ExportError
from kmsportal.crypto.x509.keys import check_export_password

# --- PKCS#12 ---------------------------------------------------------------------------------


def generate_pkcs12(
    *,
    private_key: PrivateKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: bytes,
    friendly_name: bytes,
) -> bytes:
    """A password-protected PKCS#12 file with the key, its certificate and the CA chain.

    Uses cryptography's best available encryption (AES-256-CBC with PBKDF2-HMAC-SHA256 and an
    HMAC-SHA256 MAC), which OpenSSL 3 and current Windows/macOS read. The password must be at
    least :data:`MIN_EXPORT_PASSWORD_LENGTH` characters; the key must match the certificate.
    """
    check_export_password(password)
    if private_key.public_key() != certificate.public_key():
        raise ExportError("the private key does not belong to the certificate")
    return pkcs12.serialize_key_and_certificates(
        name=friendly_name or None,
        key=private_key,
        cert=certificate,
        cas=list(chain) or None,
        encryption_algorithm=serialization.BestAvailableEncryption(password),
    )
