"""Private keys: the key types the PKI generates, DER/PEM encoding, public key checks."""

from __future__ import annotations

import enum

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from kmsportal.crypto.signer import PrivateKey
from kmsportal.crypto.x509.errors import ExportError, PrivateKeyError

#: Shortest password for PKCS#12 files and encrypted PEM keys.
MIN_EXPORT_PASSWORD_LENGTH = 8

_MIN_RSA_BITS = 2048
# Larger RSA keys are legal but make every signature check slow; nobody needs them.
_MAX_RSA_BITS = 8192
_ALLOWED_CURVES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# --- keys ------------------------------------------------------------------------------------


class KeyType(enum.StrEnum):
    """Key algorithms and sizes that the PKI generates."""

    rsa2048 = "rsa2048"
    rsa3072 = "rsa3072"
    rsa4096 = "rsa4096"
    ecp256 = "ecp256"
    ecp384 = "ecp384"

    @property
    def label(self) -> str:
        """Display form, e.g. "RSA 3072" or "EC P-256"."""
        return {
            KeyType.rsa2048: "RSA 2048",
            KeyType.rsa3072: "RSA 3072",
            KeyType.rsa4096: "RSA 4096",
            KeyType.ecp256: "EC P-256",
            KeyType.ecp384: "EC P-384",
        }[self]


#: Key type for new CA keys: RSA 3072 (~128-bit security, NIST SP 800-57 beyond 2030).
DEFAULT_CA_KEY_TYPE = KeyType.rsa3072


def generate_private_key(key_type: KeyType | str) -> PrivateKey:
    """Generate a new private key of ``key_type`` (RSA with e=65537, or EC on a NIST curve)."""
    key_type = KeyType(key_type)
    if key_type is KeyType.ecp256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.ecp384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = {KeyType.rsa2048: 2048, KeyType.rsa3072: 3072, KeyType.rsa4096: 4096}[key_type]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_to_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER of ``key``, for the caller to seal before storing it."""
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def private_key_from_der(data: bytes) -> PrivateKey:
    """Load an unencrypted PKCS#8 (or traditional) DER private key; RSA or EC only."""
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PrivateKeyError("the data is not an unencrypted DER private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PrivateKeyError(
            f"the private key is {describe_public_key(key.public_key())}; "
            "only RSA and EC keys are supported"
        )
    return key


def private_key_to_encrypted_pem(key: PrivateKey, password: bytes) -> bytes:
    """PKCS#8 PEM of ``key`` encrypted under ``password`` (the best encryption available).

    The password must be at least :data:`MIN_EXPORT_PASSWORD_LENGTH` characters.
    """
    check_export_password(password)
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(password),
    )


def describe_public_key(public_key: object) -> str:
    """A short description of a public key: "RSA 3072", "EC P-256", "Ed25519", ..."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return f"EC {_ALLOWED_CURVES.get(curve, curve)}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(public_key, x25519.X25519PublicKey):
        return "X25519"
    if isinstance(public_key, x448.X448PublicKey):
        return "X448"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA {public_key.key_size}"
    return "unknown"


def public_key_problem(public_key: object) -> str | None:
    """Why ``public_key`` is not acceptable for a certificate, or None if it is.

    The answer completes a sentence such as "the CSR uses ...".
    """
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < _MIN_RSA_BITS:
            return f"a {bits}-bit RSA key; at least {_MIN_RSA_BITS} bits are required"
        if bits > _MAX_RSA_BITS:
            return f"a {bits}-bit RSA key; at most {_MAX_RSA_BITS} bits are accepted"
        e = public_key.public_numbers().e
        # CAB BR 6.1.6: the exponent is odd and at least 65537.
        if e < 65537 or e % 2 == 0:
            return (
                f"an RSA key with public exponent {e}; it must be an odd number of at least 65537"
            )
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _ALLOWED_CURVES:
            return (
                f"an EC key on curve {public_key.curve.name}; "
                "only P-256, P-384 and P-521 are accepted"
            )
        return None
    described = describe_public_key(public_key)
    article = "an" if described[0].upper() in "AEIOUX" else "a"
    return (
        f"{article} {described} key; only RSA (2048 bits or more) and EC (P-256, P-384, P-521) "
        "keys are accepted"
    )


def check_export_password(password: bytes) -> None:
    if not isinstance(password, bytes):
        raise TypeError("password must be bytes")
    if len(password) < MIN_EXPORT_PASSWORD_LENGTH:
        raise ExportError(
            f"the password is too short; use at least {MIN_EXPORT_PASSWORD_LENGTH} characters"
        )
