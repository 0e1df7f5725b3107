"""The X.509 layer of the PKI: keys, names, SANs, CSRs, certificates, PKCS#12, display.

This package's public surface; the modules are :mod:`.errors`, :mod:`.keys`, :mod:`.names`,
:mod:`.loading`, :mod:`.csr`, :mod:`.builders`, :mod:`.pkcs12` and :mod:`.summaries`.

Pure functions over ``cryptography`` objects; no Django. Certificates are built as unsigned
``x509.CertificateBuilder`` objects and signed by a :class:`~kmsportal.crypto.signer.Signer`,
the only code that touches CA private keys.

Every domain error is a subclass of :class:`X509Error` (itself a ``ValueError``) whose message
is written for the person filling in a web form: it names the problem plainly and, where
possible, what to do instead.

RFC 5280 choices made here, in brief (details at the code):

* serial numbers are 159 random bits: positive, at most 20 octets, at least 64 bits of
  entropy (RFC 5280 section 4.1.2.2, CAB BR 7.1);
* ``notBefore`` is backdated by five minutes for clients with slow clocks;
* CA certificates carry critical ``basicConstraints`` and ``keyUsage``; every certificate has
  a subject key identifier and an authority key identifier (key identifier form only);
* leaf validity is clipped to the issuer's ``notAfter``; an intermediate that would outlive
  its parent is refused instead (a CA whose certificate silently ends early surprises people).
"""

from __future__ import annotations

from kmsportal.crypto.profiles import PROFILES, Profile, ProfileError, get_profile
from kmsportal.crypto.x509.builders import (
    CLOCK_SKEW,
    build_ca_certificate,
    build_certificate,
    new_serial_number,
)
from kmsportal.crypto.x509.csr import CSR_MAX_BYTES, build_csr, csr_requested_sans, load_csr
from kmsportal.crypto.x509.errors import (
    CertificateLoadError,
    CSRError,
    ExportError,
    IssuanceError,
    PrivateKeyError,
    SANError,
    SubjectError,
    X509Error,
)
from kmsportal.crypto.x509.keys import (
    DEFAULT_CA_KEY_TYPE,
    MIN_EXPORT_PASSWORD_LENGTH,
    KeyType,
    describe_public_key,
    generate_private_key,
    private_key_from_der,
    private_key_to_der,
    private_key_to_encrypted_pem,
)
from kmsportal.crypto.x509.loading import (
    BUNDLE_MAX_BYTES,
    CERTIFICATE_MAX_BYTES,
    certificate_to_der,
    certificate_to_pem,
    load_certificate,
    load_certificates,
)
from kmsportal.crypto.x509.names import format_name, format_san, parse_san, parse_subject, san_type
from kmsportal.crypto.x509.pkcs12 import generate_pkcs12
from kmsportal.crypto.x509.summaries import (
    CertificateSummary,
    describe_certificate,
    extended_key_usage_name,
)

__all__ = [
    "BUNDLE_MAX_BYTES",
    "CERTIFICATE_MAX_BYTES",
    "CLOCK_SKEW",
    "CSR_MAX_BYTES",
    "DEFAULT_CA_KEY_TYPE",
    "MIN_EXPORT_PASSWORD_LENGTH",
    "PROFILES",
    "CSRError",
    "CertificateLoadError",
    "CertificateSummary",
    "ExportError",
    "IssuanceError",
    "KeyType",
    "PrivateKeyError",
    "Profile",
    "ProfileError",
    "SANError",
    "SubjectError",
    "X509Error",
    "build_ca_certificate",
    "build_certificate",
    "build_csr",
    "certificate_to_der",
    "certificate_to_pem",
    "csr_requested_sans",
    "describe_certificate",
    "describe_public_key",
    "extended_key_usage_name",
    "format_name",
    "format_san",
    "generate_pkcs12",
    "generate_private_key",
    "get_profile",
    "load_certificate",
    "load_certificates",
    "load_csr",
    "new_serial_number",
    "parse_san",
    "parse_subject",
    "private_key_from_der",
    "private_key_to_der",
    "private_key_to_encrypted_pem",
    "san_type",
]
