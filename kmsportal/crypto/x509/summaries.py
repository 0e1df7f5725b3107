"""Human summaries of certificates for the portal pages."""

from __future__ import annotations

import binascii
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from kmsportal.crypto.x509.keys import describe_public_key
from kmsportal.crypto.x509.loading import get_extension
from kmsportal.crypto.x509.names import display_name, format_san

# --- display ---------------------------------------------------------------------------------

_EKU_NAMES: dict[ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SMARTCARD_LOGON: "smartcardLogon",
    ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC: "pkInitKDC",
    ExtendedKeyUsageOID.IPSEC_IKE: "ipsecIKE",
    ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY: "certificateTransparency",
}

# RFC 5280 names of the key usage bits, in bit order.
_KEY_USAGE_NAMES: dict[str, str] = {
    "digital_signature": "digitalSignature",
    "content_commitment": "nonRepudiation",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
    "encipher_only": "encipherOnly",
    "decipher_only": "decipherOnly",
}

_SIGNATURE_ALGORITHM_NAMES: dict[ObjectIdentifier, str] = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: "RSA with SHA-256",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "RSA with SHA-384",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "RSA with SHA-512",
    SignatureAlgorithmOID.RSA_WITH_SHA224: "RSA with SHA-224",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "RSA with SHA-1",
    SignatureAlgorithmOID.RSA_WITH_MD5: "RSA with MD5",
    SignatureAlgorithmOID.RSASSA_PSS: "RSA-PSS",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA with SHA-256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA with SHA-384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA with SHA-512",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ECDSA with SHA-1",
    SignatureAlgorithmOID.ED25519: "Ed25519",
    SignatureAlgorithmOID.ED448: "Ed448",
}


def extended_key_usage_name(oid: ObjectIdentifier) -> str:
    """The RFC 5280 short name of an EKU OID ("serverAuth", ...), or its dotted form."""
    return _EKU_NAMES.get(oid, oid.dotted_string)


def _hex(data: bytes, separator: str = ":") -> str:
    return binascii.hexlify(data, separator).decode("ascii").upper() if data else ""


@dataclass(frozen=True)
class CertificateSummary:
    """Everything a certificate detail page shows, as plain Python values.

    Times are aware UTC datetimes; fingerprints and key identifiers are uppercase hex with
    colons; ``serial_number`` is uppercase hex without separators.
    """

    subject: str
    issuer: str
    serial_number: str
    not_before: dt.datetime
    not_after: dt.datetime
    public_key: str
    signature_algorithm: str
    subject_alternative_names: tuple[str, ...]
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    is_ca: bool
    path_length: int | None
    basic_constraints: str | None
    subject_key_identifier: str | None
    authority_key_identifier: str | None
    crl_distribution_points: tuple[str, ...]
    ca_issuers_urls: tuple[str, ...]
    ocsp_urls: tuple[str, ...]
    ocsp_no_check: bool
    is_self_signed: bool
    sha256_fingerprint: str
    sha1_fingerprint: str


def _uris(names: Iterable[x509.GeneralName] | None) -> list[str]:
    return [n.value for n in names or () if isinstance(n, x509.UniformResourceIdentifier)]


def describe_certificate(certificate: x509.Certificate) -> CertificateSummary:
    """Decode ``certificate`` for display (see :class:`CertificateSummary`)."""
    sans = get_extension(certificate, x509.SubjectAlternativeName)
    usage = get_extension(certificate, x509.KeyUsage)
    key_usage: list[str] = []
    if isinstance(usage, x509.KeyUsage):
        for flag, label in _KEY_USAGE_NAMES.items():
            try:
                if getattr(usage, flag):
                    key_usage.append(label)
            except ValueError:  # encipher_only/decipher_only without keyAgreement
                continue
    eku = get_extension(certificate, x509.ExtendedKeyUsage)
    constraints = get_extension(certificate, x509.BasicConstraints)
    is_ca = isinstance(constraints, x509.BasicConstraints) and constraints.ca
    path_length = (
        constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None
    )
    basic = None
    if isinstance(constraints, x509.BasicConstraints):
        basic = "CA:TRUE" if constraints.ca else "CA:FALSE"
        if constraints.ca and constraints.path_length is not None:
            basic += f", pathlen:{constraints.path_length}"
    ski = get_extension(certificate, x509.SubjectKeyIdentifier)
    aki = get_extension(certificate, x509.AuthorityKeyIdentifier)
    cdp = get_extension(certificate, x509.CRLDistributionPoints)
    crl_urls = [u for point in cdp or () for u in _uris(point.full_name)] if cdp else []
    aia = get_extension(certificate, x509.AuthorityInformationAccess)
    ca_issuers = [
        d.access_location.value
        for d in aia or ()
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    ocsp_urls = [
        d.access_location.value
        for d in aia or ()
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    try:
        public_key = describe_public_key(certificate.public_key())
    except (ValueError, UnsupportedAlgorithm):
        public_key = "an unsupported key type"
    oid = certificate.signature_algorithm_oid
    return CertificateSummary(
        subject=display_name(certificate.subject),
        issuer=display_name(certificate.issuer),
        serial_number=_serial_hex(certificate.serial_number),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        public_key=public_key,
        signature_algorithm=_SIGNATURE_ALGORITHM_NAMES.get(oid, oid.dotted_string),
        subject_alternative_names=tuple(format_san(n) for n in sans or ()),
        key_usage=tuple(key_usage),
        extended_key_usage=tuple(extended_key_usage_name(o) for o in eku or ()),
        is_ca=is_ca,
        path_length=path_length,
        basic_constraints=basic,
        subject_key_identifier=_hex(ski.digest)
        if isinstance(ski, x509.SubjectKeyIdentifier)
        else None,
        authority_key_identifier=(
            _hex(aki.key_identifier)
            if isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier
            else None
        ),
        crl_distribution_points=tuple(crl_urls),
        ca_issuers_urls=tuple(ca_issuers),
        ocsp_urls=tuple(ocsp_urls),
        ocsp_no_check=get_extension(certificate, x509.OCSPNoCheck) is not None,
        is_self_signed=certificate.subject == certificate.issuer,
        sha256_fingerprint=_hex(certificate.fingerprint(hashes.SHA256())),
        sha1_fingerprint=_hex(certificate.fingerprint(hashes.SHA1())),  # noqa: S303 - display only
    )


def _serial_hex(serial_number: int) -> str:
    digits = format(serial_number, "X")
    # Even number of digits, as OpenSSL and most tools show it.
    return digits.zfill(len(digits) + len(digits) % 2)
