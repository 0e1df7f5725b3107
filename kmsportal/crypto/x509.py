"""The X.509 layer of the PKI: keys, names, SANs, CSRs, certificates, PKCS#12, display.

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

import binascii
import datetime as dt
import enum
import ipaddress
import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from kmsportal.crypto.profiles import (
    PROFILES,
    SAN_TYPE_LABELS,
    Profile,
    ProfileError,
    get_profile,
)
from kmsportal.crypto.signer import PrivateKey, PublicKey, Signer, signature_hash_for

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

#: Largest CSR accepted (PEM or DER). Real CSRs are 1-4 KiB.
CSR_MAX_BYTES = 65536
#: Largest single certificate accepted by :func:`load_certificate`.
CERTIFICATE_MAX_BYTES = 65536
#: Largest PEM bundle accepted by :func:`load_certificates`.
BUNDLE_MAX_BYTES = 1024 * 1024
#: notBefore is backdated by this much so that clients with slightly slow clocks accept a
#: certificate right after issuance.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: Shortest password for PKCS#12 files and encrypted PEM keys.
MIN_EXPORT_PASSWORD_LENGTH = 8

_MIN_RSA_BITS = 2048
# Larger RSA keys are legal but make every signature check slow; nobody needs them.
_MAX_RSA_BITS = 8192
_ALLOWED_CURVES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_ONE_DAY = dt.timedelta(days=1)


# --- errors ----------------------------------------------------------------------------------


class X509Error(ValueError):
    """Base class of the domain errors of this module; the message is user-facing."""


class PrivateKeyError(X509Error):
    """A private key could not be loaded or is of an unsupported type."""


class SubjectError(X509Error):
    """A subject (distinguished name) string is not valid."""


class SANError(X509Error):
    """A subject alternative name string is not valid."""


class CSRError(X509Error):
    """A certificate signing request is unreadable or not acceptable."""


class IssuanceError(X509Error):
    """A certificate cannot be issued as asked (profile, validity, key or CA constraints)."""


class CertificateLoadError(X509Error):
    """Data that should be a certificate (or a bundle of them) is not readable as one."""


class ExportError(X509Error):
    """A key or PKCS#12 export was refused (for example, a password that is too short)."""


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
    _check_export_password(password)
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


def _public_key_problem(public_key: object) -> str | None:
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


def _check_export_password(password: bytes) -> None:
    if not isinstance(password, bytes):
        raise TypeError("password must be bytes")
    if len(password) < MIN_EXPORT_PASSWORD_LENGTH:
        raise ExportError(
            f"the password is too short; use at least {MIN_EXPORT_PASSWORD_LENGTH} characters"
        )


# --- serial numbers --------------------------------------------------------------------------


def new_serial_number() -> int:
    """A fresh certificate serial number: 159 random bits from the OS CSPRNG, never zero.

    RFC 5280 section 4.1.2.2 requires a positive integer of at most 20 octets; 159 bits keep
    the DER INTEGER within 20 octets without a sign byte. The CAB BR ask for at least 64 bits
    of CSPRNG output; 159 random bits give that with a negligible chance of collision.
    """
    while True:
        serial = int.from_bytes(os.urandom(20), "big") >> 1
        if serial > 0:
            return serial


def _check_serial(serial_number: int) -> int:
    if not 0 < serial_number < 2**159:
        raise IssuanceError("the serial number must be a positive integer of at most 159 bits")
    return serial_number


# --- names -----------------------------------------------------------------------------------

# Attribute keywords accepted by parse_subject (case-insensitive) and RFC 5280 Appendix A
# upper bounds for their lengths.
_SUBJECT_ATTRIBUTES: dict[str, tuple[ObjectIdentifier, int]] = {
    "cn": (NameOID.COMMON_NAME, 64),
    "o": (NameOID.ORGANIZATION_NAME, 64),
    "ou": (NameOID.ORGANIZATIONAL_UNIT_NAME, 64),
    "c": (NameOID.COUNTRY_NAME, 2),
    "l": (NameOID.LOCALITY_NAME, 128),
    "st": (NameOID.STATE_OR_PROVINCE_NAME, 128),
    "emailaddress": (NameOID.EMAIL_ADDRESS, 255),
    "e": (NameOID.EMAIL_ADDRESS, 255),
    "serialnumber": (NameOID.SERIAL_NUMBER, 64),
}
_SUBJECT_KEYWORDS = "CN, O, OU, C, L, ST, emailAddress (or E) and serialNumber"
# The characters allowed in an ASN.1 PrintableString (serialNumber and C are PrintableString).
_PRINTABLE = frozenset(string.ascii_letters + string.digits + " '()+,-./:=?")


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not preceded by a backslash escape."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_value(raw: str, keyword: str) -> str:
    """Undo RFC 4514 escapes: ``\\,`` style and ``\\C3\\BC`` hex pairs (UTF-8 bytes)."""
    out = bytearray()
    i = 0
    while i < len(raw):
        char = raw[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(raw):
            raise SubjectError(f"the value of {keyword} ends with a lone backslash")
        pair = raw[i + 1 : i + 3]
        if len(pair) == 2 and all(c in string.hexdigits for c in pair):
            out.append(int(pair, 16))
            i += 3
        else:
            out += raw[i + 1].encode("utf-8")
            i += 2
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise SubjectError(f"the value of {keyword} has hex escapes that are not UTF-8") from None


def parse_subject(text: str) -> x509.Name:
    """Parse a subject such as ``CN=Example Root,O=Example Org,C=DE`` into an ``x509.Name``.

    The string is in RFC 4514 order (most specific attribute first), so that it round-trips
    with :func:`format_name`. Accepted attributes: CN, O, OU, C, L, ST, emailAddress (or E)
    and serialNumber, case-insensitive. A comma (or other special character) inside a value
    is escaped with a backslash; RFC 4514 hex escapes (``\\C3\\BC``) and plain non-ASCII
    text both work. Spaces around separators are ignored.

    Raises :class:`SubjectError` for an empty subject, an unknown attribute, an empty value,
    a country that is not two letters, or a value that is too long.
    """
    if not text or not text.strip():
        raise SubjectError("the subject is empty; enter at least one attribute, e.g. CN=Example")
    attributes: list[x509.NameAttribute] = []
    for part in _split_unescaped(text.strip(), ","):
        if not part.strip():
            raise SubjectError(
                "the subject has an empty component (two commas in a row, or a trailing "
                "comma); escape a comma inside a value as \\,"
            )
        keyword, sep, raw_value = part.partition("=")
        keyword = keyword.strip()
        if not sep:
            raise SubjectError(
                f"{part.strip()!r} is not of the form ATTRIBUTE=value (for example CN=Example)"
            )
        spec = _SUBJECT_ATTRIBUTES.get(keyword.casefold())
        if spec is None:
            raise SubjectError(
                f"unknown attribute {keyword!r} in the subject; use {_SUBJECT_KEYWORDS}"
            )
        oid, max_length = spec
        value = _unescape_value(raw_value.strip(), keyword)
        if not value:
            raise SubjectError(f"the value of {keyword} is empty")
        attributes.append(_name_attribute(oid, keyword, value, max_length))
    # RFC 4514 strings list the most specific RDN first; X.509 encodes it last.
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in reversed(attributes)])


def _name_attribute(
    oid: ObjectIdentifier, keyword: str, value: str, max_length: int
) -> x509.NameAttribute:
    if oid == NameOID.COUNTRY_NAME:
        if len(value) != 2 or not value.isascii() or not value.isalpha():
            raise SubjectError(
                f"the country (C) must be a two-letter ISO 3166 code such as DE, not {value!r}"
            )
        value = value.upper()
    elif len(value) > max_length:
        raise SubjectError(
            f"the value of {keyword} is {len(value)} characters long; "
            f"at most {max_length} are allowed"
        )
    if oid == NameOID.EMAIL_ADDRESS and (not value.isascii() or "@" not in value):
        # emailAddress is an IA5String (ASCII) in X.509.
        raise SubjectError(f"{value!r} is not a valid ASCII email address for {keyword}")
    if oid == NameOID.SERIAL_NUMBER and not set(value) <= _PRINTABLE:
        raise SubjectError(
            f"the serialNumber {value!r} may contain only letters, digits, spaces and '()+,-./:=?"
        )
    return x509.NameAttribute(oid, value)


# Keywords cryptography does not know by itself (it would print the OID and a hex dump).
_NAME_KEYWORDS: dict[ObjectIdentifier, str] = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
}


def format_name(name: x509.Name) -> str:
    """The RFC 4514 string of ``name`` (e.g. ``CN=Example Root,O=Example Org,C=DE``).

    Non-ASCII characters are kept as they are (not hex-escaped), which is what people expect
    to read in a web page.
    """
    return name.rfc4514_string(_NAME_KEYWORDS)


def _display_name(name: x509.Name) -> str:
    return format_name(name) or "(empty subject)"


# --- subject alternative names -----------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def _normalize_dns_name(value: str, *, allow_wildcard: bool, what: str) -> str:
    """Lower-case, IDNA-encode and check a DNS name; raise :class:`SANError` if invalid."""
    name = value.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise SANError(f"the {what} is empty")
    if not name.isascii():
        try:
            # Internationalised names are stored as A-labels (RFC 5280 section 7.2).
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise SANError(f"{value!r} is not a valid internationalised domain name") from None
    name = name.lower()
    if len(name) > 253:
        raise SANError(f"the {what} {value!r} is longer than 253 characters")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if label == "*" and index == 0 and allow_wildcard:
            if len(labels) < 3:
                raise SANError(
                    f"the wildcard {value!r} is too broad; it needs at least two labels after "
                    "'*.' (e.g. *.example.org)"
                )
            continue
        if "*" in label:
            raise SANError(
                f"{value!r} is not a valid {what}: a wildcard is only allowed as the whole "
                "leftmost label (*.example.org)"
            )
        if not label:
            raise SANError(f"{value!r} is not a valid {what}: it has an empty label (..)")
        if not _DNS_LABEL.fullmatch(label):
            raise SANError(
                f"{value!r} is not a valid {what}: the label {label!r} must be 1-63 letters, "
                "digits or hyphens, not starting or ending with a hyphen"
            )
    return name


def parse_san(text: str) -> x509.GeneralName:
    """Parse one subject alternative name written as ``type:value``.

    Types: ``dns:www.example.org`` (a leading ``*.`` wildcard is allowed), ``ip:192.0.2.1``
    or ``ip:2001:db8::1``, ``email:a@example.org``, ``uri:https://example.org/x``. The type
    is case-insensitive. Raises :class:`SANError` naming what is wrong.
    """
    kind, sep, value = text.strip().partition(":")
    kind = kind.strip().casefold()
    value = value.strip()
    if not sep or kind not in SAN_TYPE_LABELS:
        raise SANError(
            f"{text.strip()!r} is not a subject alternative name; write dns:www.example.org, "
            "ip:192.0.2.1, email:user@example.org or uri:https://example.org/"
        )
    if not value:
        raise SANError(f"the {SAN_TYPE_LABELS[kind]} after '{kind}:' is empty")
    if kind == "dns":
        return x509.DNSName(_normalize_dns_name(value, allow_wildcard=True, what="DNS name"))
    if kind == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise SANError(f"{value!r} is not a valid IPv4 or IPv6 address") from None
    if kind == "email":
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain:
            raise SANError(f"{value!r} is not a valid email address (expected user@domain)")
        if not _EMAIL_LOCAL.fullmatch(local) or ".." in local:
            # rfc822Name is an IA5String: ASCII only (SmtpUTF8Mailbox is not supported).
            raise SANError(
                f"{value!r} is not a valid email address: the part before @ must be ASCII "
                "letters, digits or !#$%&'*+/=?^_`{|}~.-"
            )
        domain = _normalize_dns_name(domain, allow_wildcard=False, what="email domain")
        return x509.RFC822Name(f"{local}@{domain}")
    # uri: an absolute URI (RFC 5280 section 4.2.1.6: a URI SAN MUST NOT be relative).
    if not value.isascii() or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise SANError(
            f"{value!r} is not a valid URI: it must be ASCII without spaces "
            "(percent-encode other characters)"
        )
    scheme, _, rest = value.partition(":")
    if not _URI_SCHEME.fullmatch(scheme) or not rest:
        raise SANError(f"{value!r} is not an absolute URI such as https://example.org/path")
    if rest.startswith("//"):
        try:
            host = urlsplit(value).hostname
        except ValueError:
            host = None
        if not host:
            raise SANError(f"{value!r} is not a valid URI: it has no host after '//'")
    return x509.UniformResourceIdentifier(value)


def san_type(general_name: x509.GeneralName) -> str | None:
    """The SAN type keyword ("dns", "ip", "email", "uri") of a general name, or None."""
    if isinstance(general_name, x509.DNSName):
        return "dns"
    if isinstance(general_name, x509.IPAddress):
        return "ip"
    if isinstance(general_name, x509.RFC822Name):
        return "email"
    if isinstance(general_name, x509.UniformResourceIdentifier):
        return "uri"
    return None


def format_san(general_name: x509.GeneralName) -> str:
    """Format a general name in :func:`parse_san` syntax (``dns:...``, ``ip:...``, ...).

    Types that :func:`parse_san` does not accept are shown as ``dirname:``, ``rid:`` or
    ``othername:`` for display.
    """
    if isinstance(general_name, x509.IPAddress):
        return f"ip:{general_name.value}"
    kind = san_type(general_name)
    if kind is not None:
        return f"{kind}:{general_name.value}"
    if isinstance(general_name, x509.DirectoryName):
        return f"dirname:{format_name(general_name.value)}"
    if isinstance(general_name, x509.RegisteredID):
        return f"rid:{general_name.value.dotted_string}"
    if isinstance(general_name, x509.OtherName):
        return f"othername:{general_name.type_id.dotted_string}"
    return f"unknown:{general_name!r}"


# --- PEM / DER helpers -----------------------------------------------------------------------

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


def _pem_blocks(data: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    """The PEM blocks of ``data`` as (label, whole block) in order, and the label of a block
    whose END line is missing (scanning stops there).

    A linear scan: a single regular expression over BEGIN...END with a back-reference would
    backtrack quadratically on input full of unterminated BEGIN lines.
    """
    blocks: list[tuple[str, bytes]] = []
    position = 0
    while True:
        begin = _PEM_BEGIN.search(data, position)
        if begin is None:
            return blocks, None
        label = begin.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, begin.end())
        if end == -1:
            return blocks, label.decode("ascii")
        position = end + len(end_marker)
        blocks.append((label.decode("ascii"), data[begin.start() : position]))


def _der_structure_problem(data: bytes) -> str | None:
    """Check the outer DER TLV of ``data``: None if the length fits, else what is wrong."""
    if len(data) < 2:
        return f"the DER data is truncated: only {len(data)} byte(s) are present"
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        # DER forbids the indefinite form (0x80) and lengths need at most 4 octets here.
        if count == 0 or count > 4:
            return "the data is not valid DER (bad length encoding)"
        if len(data) < 2 + count:
            return f"the DER data is truncated: only {len(data)} byte(s) are present"
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    total = header + length
    if len(data) < total:
        return (
            f"the DER data is truncated: its header announces {total} bytes but only "
            f"{len(data)} are present"
        )
    if len(data) > total:
        return f"the DER data has {len(data) - total} unexpected byte(s) after its end"
    return None


def _pem_label_problem(label: str, expected: str) -> str:
    if "PRIVATE KEY" in label:
        return f"this is a private key, not a {expected}; never upload private keys"
    if label in {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}:
        return f"this is a certificate signing request (CSR), not a {expected}"
    if label in {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}:
        return f"this is a certificate, not a {expected}"
    return f"the PEM block is a {label.title()}, not a {expected}"


def _looks_like_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


# --- CSRs ------------------------------------------------------------------------------------

# Signatures made with broken hashes are refused by name. SHA-1 collisions are practical
# (SHAttered, 2017); MD5 ones since 2004.
_WEAK_SIGNATURE_ALGORITHMS: dict[ObjectIdentifier, str] = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA-1",
    ObjectIdentifier("1.3.14.3.2.29"): "SHA-1",  # sha1WithRSASignature (OIW)
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "SHA-1",
}


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load and check a certificate signing request in PEM or DER form.

    Accepted: at most :data:`CSR_MAX_BYTES`; an RSA key of 2048-8192 bits or an EC key on
    P-256, P-384 or P-521; not signed with SHA-1 or MD5; a signature that verifies (proof
    that the requester holds the private key). Raises :class:`CSRError` otherwise, with a
    message that names the problem.
    """
    if len(data) > CSR_MAX_BYTES:
        raise CSRError(
            f"the CSR is {len(data):,} bytes; at most {CSR_MAX_BYTES:,} bytes (64 KiB) are accepted"
        )
    if not data.strip():
        raise CSRError("the CSR is empty")
    if _looks_like_pem(data):
        csr = _load_pem_csr(data)
    elif data[0] == 0x30:  # an ASN.1 SEQUENCE: try DER
        problem = _der_structure_problem(data)
        if problem:
            raise CSRError(f"the CSR cannot be read: {problem}")
        try:
            csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise CSRError("the data is DER but not a valid certificate signing request") from None
    else:
        raise CSRError(
            "the data is not a certificate signing request: expected PEM "
            "(-----BEGIN CERTIFICATE REQUEST-----) or DER"
        )
    _check_csr(csr)
    return csr


def _load_pem_csr(data: bytes) -> x509.CertificateSigningRequest:
    blocks, unterminated = _pem_blocks(data)
    for label, block in blocks:
        if label in {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}:
            try:
                return x509.load_pem_x509_csr(block)
            except ValueError:
                raise CSRError(
                    "the PEM block is damaged: its content is not a valid certificate "
                    "signing request (was it cut off or edited?)"
                ) from None
    if blocks:
        raise CSRError(_pem_label_problem(blocks[0][0], "certificate signing request"))
    if unterminated:
        raise CSRError(f"the PEM data is incomplete: no matching -----END {unterminated}----- line")
    raise CSRError("the PEM data has no valid -----BEGIN CERTIFICATE REQUEST----- line")


def _check_csr(csr: x509.CertificateSigningRequest) -> None:
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CSRError("the CSR's public key uses an unsupported algorithm") from None
    problem = _public_key_problem(public_key)
    if problem:
        raise CSRError(f"the CSR uses {problem}")
    weak = _WEAK_SIGNATURE_ALGORITHMS.get(csr.signature_algorithm_oid)
    if weak:
        raise CSRError(
            f"the CSR is signed with {weak}, which is no longer accepted; "
            "create it again with SHA-256 or stronger"
        )
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CSRError(
            "the CSR's signature does not verify: the request was altered or not signed "
            "with the matching private key"
        )
    try:
        csr.extensions  # noqa: B018 - parse now so that a bad extension is reported here
    except ValueError as exc:
        raise CSRError(f"the CSR's requested extensions cannot be read: {exc}") from None


def csr_requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The subject alternative names requested in the CSR (empty list if none)."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise CSRError(f"the CSR's requested extensions cannot be read: {exc}") from None
    return list(extension.value)


# --- certificate building --------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """Aware UTC with whole seconds (X.509 times have no fractions, RFC 5280 4.1.2.5)."""
    if moment.tzinfo is None:
        raise TypeError("datetimes must be timezone-aware")
    return moment.astimezone(dt.UTC).replace(microsecond=0)


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _get_extension(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI in key-identifier form only (RFC 5280 4.2.1.1).

    The issuer's own SKI is copied when present, so that the two always match even if the
    issuer used a different SKI method; otherwise it is computed from the issuer's key.
    Issuer name and serial are left out: they would pin the child to one issuer certificate
    and break re-issued (cross-signed or renewed) CA certificates.
    """
    ski = _get_extension(issuer, x509.SubjectKeyIdentifier)
    if isinstance(ski, x509.SubjectKeyIdentifier):
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _distribution_extensions(
    *,
    crl_distribution_url: str | None,
    ca_issuers_url: str | None,
    ocsp_url: str | None,
    freshest_crl_url: str | None = None,
) -> list[x509.ExtensionType]:
    """CRL distribution point, FreshestCRL (where delta CRLs are, RFC 5280 4.2.1.15) and
    authority information access, each non-critical."""
    extensions: list[x509.ExtensionType] = []
    if crl_distribution_url:
        extensions.append(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_distribution_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            )
        )
    if freshest_crl_url:
        extensions.append(
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(freshest_crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            )
        )
    access: list[x509.AccessDescription] = []
    if ocsp_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if ca_issuers_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(ca_issuers_url),
            )
        )
    if access:
        extensions.append(x509.AuthorityInformationAccess(access))
    return extensions


def _check_issuer(issuer_certificate: x509.Certificate, signer: Signer) -> None:
    """The issuer must be a CA allowed to sign certificates, and the signer must hold its key."""
    constraints = _get_extension(issuer_certificate, x509.BasicConstraints)
    if not (isinstance(constraints, x509.BasicConstraints) and constraints.ca):
        raise IssuanceError(
            f"{_display_name(issuer_certificate.subject)} is not a CA certificate "
            "(basicConstraints CA:TRUE is missing), so it cannot issue certificates"
        )
    usage = _get_extension(issuer_certificate, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise IssuanceError(
            f"{_display_name(issuer_certificate.subject)} may not sign certificates "
            "(its key usage lacks keyCertSign)"
        )
    if signer.public_key != issuer_certificate.public_key():
        raise IssuanceError(
            "the signing key does not belong to the issuing CA certificate "
            f"{_display_name(issuer_certificate.subject)}"
        )


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError("days must be an int")
    if days < 1:
        raise IssuanceError(f"the validity must be at least 1 day, not {days}")


def build_ca_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    signer: Signer,
    issuer_certificate: x509.Certificate | None,
    days: int,
    path_length: int | None,
    crl_distribution_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
    serial_number: int | None = None,
    not_before: dt.datetime | None = None,
    freshest_crl_url: str | None = None,
) -> x509.Certificate:
    """Build and sign a CA certificate: a self-signed root or an intermediate.

    ``issuer_certificate=None`` makes a self-signed root: ``signer`` must hold the private
    key of ``public_key``. Otherwise ``signer`` holds the issuer's key.

    Extensions: basicConstraints CA:TRUE with ``path_length`` (None = unlimited) and keyUsage
    keyCertSign + cRLSign + digitalSignature, both critical (RFC 5280 4.2.1.9, 4.2.1.3;
    digitalSignature lets the CA sign OCSP responses itself); subject key identifier;
    authority key identifier (for a root it repeats its own SKI, which RFC 5280 4.2.1.1
    permits and helps path builders); for intermediates, CRL distribution point and AIA
    (caIssuers, OCSP) pointing at the parent's services when the URLs are given.

    Validity: ``not_before`` defaults to now minus :data:`CLOCK_SKEW`; ``notAfter`` is
    ``not_before + days``. An intermediate may not outlive its parent and its path length
    must fit under the parent's: both raise :class:`IssuanceError` rather than adjusting.
    """
    _check_days(days)
    if len(subject) == 0:
        # RFC 5280 4.1.2.4/4.1.2.6: a CA's name becomes the issuer field, which MUST NOT be empty.
        raise IssuanceError("a CA certificate needs a subject name, e.g. CN=Example Issuing CA")
    problem = _public_key_problem(public_key)
    if problem:
        raise IssuanceError(f"the CA key is {problem}")
    if path_length is not None and (isinstance(path_length, bool) or path_length < 0):
        raise IssuanceError("the path length must be 0 or more (or empty for no limit)")
    start = _as_utc(not_before) if not_before is not None else _as_utc(_utcnow() - CLOCK_SKEW)
    end = start + dt.timedelta(days=days)

    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_certificate is None:
        if signer.public_key != public_key:
            raise IssuanceError(
                "a self-signed root must be signed with its own key, but the signer holds "
                "a different key"
            )
        issuer_name = subject
        aki = x509.AuthorityKeyIdentifier(
            key_identifier=ski.digest, authority_cert_issuer=None, authority_cert_serial_number=None
        )
        # The CDP/AIA of a root would point at itself; trust anchors are not revocation-checked.
        distribution: list[x509.ExtensionType] = []
    else:
        _check_issuer(issuer_certificate, signer)
        _check_child_path_length(issuer_certificate, path_length)
        _check_within_parent(issuer_certificate, start, end)
        issuer_name = issuer_certificate.subject
        aki = _authority_key_identifier(issuer_certificate)
        distribution = _distribution_extensions(
            crl_distribution_url=crl_distribution_url,
            ca_issuers_url=ca_issuers_url,
            ocsp_url=ocsp_url,
            freshest_crl_url=freshest_crl_url,
        )

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(
            new_serial_number() if serial_number is None else _check_serial(serial_number)
        )
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)  # RFC 5280 4.2.1.1: MUST be non-critical
    )
    for extension in distribution:
        builder = builder.add_extension(extension, critical=False)
    return signer.sign_certificate(builder)


def _check_child_path_length(parent: x509.Certificate, path_length: int | None) -> None:
    """RFC 5280 4.2.1.9: a CA with pathLenConstraint n allows at most n CAs below it."""
    constraints = _get_extension(parent, x509.BasicConstraints)
    parent_limit = (
        constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None
    )
    if parent_limit is None:
        return
    parent_name = _display_name(parent.subject)
    if parent_limit == 0:
        raise IssuanceError(
            f"the parent CA {parent_name} has path length 0, so it cannot issue intermediate "
            "CA certificates; it can only issue end-entity certificates"
        )
    if path_length is None or path_length >= parent_limit:
        chosen = "no limit" if path_length is None else str(path_length)
        raise IssuanceError(
            f"the path length ({chosen}) must be less than the parent CA's path length "
            f"({parent_limit}); choose at most {parent_limit - 1}"
        )


def _check_within_parent(parent: x509.Certificate, start: dt.datetime, end: dt.datetime) -> None:
    parent_end = parent.not_valid_after_utc
    if parent_end <= start:
        raise IssuanceError(
            f"the parent CA {_display_name(parent.subject)} expired on "
            f"{_format_time(parent_end)}; it cannot issue certificates"
        )
    if end > parent_end:
        max_days = (parent_end - start) // _ONE_DAY
        advice = (
            f"choose at most {max_days} days"
            if max_days >= 1
            else "the parent expires in less than a day; renew the parent CA first"
        )
        raise IssuanceError(
            f"the intermediate would expire on {_format_time(end)}, after its parent CA "
            f"(expires {_format_time(parent_end)}); {advice}"
        )


def _leaf_key_usage(profile: Profile, public_key: PublicKey) -> x509.KeyUsage:
    flags = profile.key_usage_kwargs()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        # RFC 8813 section 3: keyEncipherment and dataEncipherment MUST NOT be set for
        # id-ecPublicKey. EC keys encrypt through ECDH, i.e. keyAgreement; that is what S/MIME
        # encryption (RFC 8551, RFC 5753) needs, while TLS (ECDHE) needs only digitalSignature.
        wanted_encryption = flags["key_encipherment"] or flags["data_encipherment"]
        flags["key_encipherment"] = flags["data_encipherment"] = False
        if wanted_encryption and ExtendedKeyUsageOID.EMAIL_PROTECTION in profile.extended_key_usage:
            flags["key_agreement"] = True
    return x509.KeyUsage(**flags)


def _check_sans(sans: Sequence[x509.GeneralName], profile: Profile) -> None:
    for general_name in sans:
        kind = san_type(general_name)
        if kind is not None and kind in profile.allowed_san_types:
            continue
        if not profile.allowed_san_types:
            raise IssuanceError(
                f"the {profile.name} profile does not allow subject alternative names "
                f"(got {format_san(general_name)})"
            )
        what = "this kind of SAN"
        if kind is not None:
            label = SAN_TYPE_LABELS[kind]
            what = label + ("es" if label.endswith("ss") else "s") + " as SAN"
        raise IssuanceError(
            f"the {profile.name} profile does not allow {what} ({format_san(general_name)}); "
            f"allowed: {profile.describe_san_types()}"
        )
    if profile.san_required and not sans:
        raise IssuanceError(
            f"the {profile.name} profile requires at least one subject alternative name "
            f"({profile.describe_san_types()})"
        )
    if len(set(sans)) != len(sans):
        raise IssuanceError("a subject alternative name is listed twice")


def build_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    issuer_certificate: x509.Certificate,
    signer: Signer,
    crl_distribution_url: str,
    ca_issuers_url: str,
    ocsp_url: str,
    days: int | None = None,
    serial_number: int | None = None,
    now: dt.datetime | None = None,
    freshest_crl_url: str | None = None,
) -> x509.Certificate:
    """Build and sign an end-entity certificate under ``profile``.

    Checks, each raising :class:`IssuanceError`: the key is RSA >= 2048 bits or EC on
    P-256/P-384/P-521; every SAN type is allowed by the profile and a required SAN is present;
    ``days`` (default: the profile maximum) does not exceed the profile maximum; the subject or
    the SANs identify someone; the issuer is a CA whose key the signer holds.

    Validity starts at ``now`` (default: the current time) minus :data:`CLOCK_SKEW` and lasts
    ``days``, **clipped to the issuer's notAfter**: a leaf cannot be valid longer than its CA,
    and unlike for intermediates, a shorter leaf is harmless, so it is shortened silently.

    Extensions: basicConstraints CA:FALSE and keyUsage (both critical), extendedKeyUsage,
    SAN (critical only when the subject is empty, RFC 5280 4.2.1.6), SKI, AKI, CRL
    distribution point, AIA (caIssuers and OCSP; no OCSP pointer in an OCSP responder's own
    certificate, which carries id-pkix-ocsp-nocheck instead).
    """
    problem = _public_key_problem(public_key)
    if problem:
        raise IssuanceError(f"the certificate's public key is {problem}")
    sans = list(sans)
    _check_sans(sans, profile)
    if len(subject) == 0 and not sans:
        raise IssuanceError("the certificate needs a subject name or a subject alternative name")
    if days is None:
        days = profile.max_validity_days
    _check_days(days)
    if days > profile.max_validity_days:
        raise IssuanceError(
            f"the {profile.name} profile allows at most {profile.max_validity_days} days; "
            f"{days} days were requested"
        )
    _check_issuer(issuer_certificate, signer)

    start = _as_utc((now if now is not None else _utcnow()) - CLOCK_SKEW)
    issuer_end = issuer_certificate.not_valid_after_utc
    if issuer_end <= start:
        raise IssuanceError(
            f"the issuing CA {_display_name(issuer_certificate.subject)} expired on "
            f"{_format_time(issuer_end)}; it cannot issue certificates"
        )
    # RFC 5280 4.1.2.5 counts notAfter inclusively: N days end one second before N * 24 h.
    end = min(start + dt.timedelta(days=days) - dt.timedelta(seconds=1), issuer_end)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(
            new_serial_number() if serial_number is None else _check_serial(serial_number)
        )
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(profile, public_key), critical=True)
        # Non-critical EKU: the usual choice (CAB BR 7.1.2.7); RFC 5280 4.2.1.12 allows both.
        .add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer_certificate), critical=False)
    )
    if sans:
        # RFC 5280 4.2.1.6: if the subject is empty, the SAN extension MUST be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    for extension in _distribution_extensions(
        crl_distribution_url=crl_distribution_url,
        ca_issuers_url=ca_issuers_url,
        ocsp_url=None if profile.ocsp_no_check else ocsp_url,
        freshest_crl_url=freshest_crl_url,
    ):
        builder = builder.add_extension(extension, critical=False)
    if profile.ocsp_no_check:
        # RFC 6960 4.2.2.2.1: clients trust this responder certificate for its lifetime.
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return signer.sign_certificate(builder)


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
    _check_export_password(password)
    if private_key.public_key() != certificate.public_key():
        raise ExportError("the private key does not belong to the certificate")
    return pkcs12.serialize_key_and_certificates(
        name=friendly_name or None,
        key=private_key,
        cert=certificate,
        cas=list(chain) or None,
        encryption_algorithm=serialization.BestAvailableEncryption(password),
    )


# --- loading and encoding certificates -------------------------------------------------------


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one certificate from PEM (the first certificate block) or DER.

    Raises :class:`CertificateLoadError` for empty or oversized input, garbage, truncated DER,
    another kind of PEM block (key, CSR) or a certificate with unreadable extensions.
    """
    if len(data) > CERTIFICATE_MAX_BYTES:
        raise CertificateLoadError(
            f"the certificate is {len(data):,} bytes; at most {CERTIFICATE_MAX_BYTES:,} "
            "bytes are accepted"
        )
    if not data.strip():
        raise CertificateLoadError("the certificate is empty")
    if _looks_like_pem(data):
        blocks, unterminated = _pem_blocks(data)
        certificate_blocks = [b for label, b in blocks if label == "CERTIFICATE"]
        if not certificate_blocks:
            if blocks:
                raise CertificateLoadError(_pem_label_problem(blocks[0][0], "certificate"))
            if unterminated:
                raise CertificateLoadError(
                    f"the PEM data is incomplete: no matching -----END {unterminated}----- line"
                )
            raise CertificateLoadError("the PEM data has no valid -----BEGIN CERTIFICATE----- line")
        return _load_pem_block(certificate_blocks[0])
    if data[0] != 0x30:
        raise CertificateLoadError(
            "the data is not a certificate: expected PEM (-----BEGIN CERTIFICATE-----) or DER"
        )
    problem = _der_structure_problem(data)
    if problem:
        raise CertificateLoadError(f"the certificate cannot be read: {problem}")
    try:
        certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateLoadError("the data is DER but not a valid X.509 certificate") from None
    return _check_loaded(certificate)


def _load_pem_block(block: bytes) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(block)
    except ValueError:
        raise CertificateLoadError(
            "the PEM block is damaged: its content is not a valid X.509 certificate "
            "(was it cut off or edited?)"
        ) from None
    return _check_loaded(certificate)


def _check_loaded(certificate: x509.Certificate) -> x509.Certificate:
    try:
        certificate.extensions  # noqa: B018 - parse now to report bad extensions here
    except ValueError as exc:
        raise CertificateLoadError(f"the certificate's extensions cannot be read: {exc}") from None
    return certificate


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle (or the one certificate of a DER file).

    Blocks other than certificates are refused, since a bundle with, say, a private key in it
    was almost certainly uploaded by mistake. Errors name the position of the bad block.
    """
    if len(data) > BUNDLE_MAX_BYTES:
        raise CertificateLoadError(
            f"the bundle is {len(data):,} bytes; at most {BUNDLE_MAX_BYTES:,} bytes are accepted"
        )
    if not data.strip():
        raise CertificateLoadError("the certificate bundle is empty")
    if not _looks_like_pem(data):
        return [load_certificate(data)]
    blocks, unterminated = _pem_blocks(data)
    if unterminated:
        raise CertificateLoadError(
            f"block {len(blocks) + 1} of the bundle is incomplete: no matching "
            f"-----END {unterminated}----- line"
        )
    if not blocks:
        raise CertificateLoadError("the PEM data has no valid -----BEGIN CERTIFICATE----- line")
    certificates: list[x509.Certificate] = []
    for position, (label, block) in enumerate(blocks, start=1):
        if label != "CERTIFICATE":
            raise CertificateLoadError(
                f"block {position} of the bundle: {_pem_label_problem(label, 'certificate')}"
            )
        try:
            certificates.append(_load_pem_block(block))
        except CertificateLoadError as exc:
            raise CertificateLoadError(f"certificate {position} of the bundle: {exc}") from None
    return certificates


def certificate_to_pem(certificate: x509.Certificate) -> bytes:
    """PEM encoding of ``certificate``."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def certificate_to_der(certificate: x509.Certificate) -> bytes:
    """DER encoding of ``certificate``."""
    return certificate.public_bytes(serialization.Encoding.DER)


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
    sans = _get_extension(certificate, x509.SubjectAlternativeName)
    usage = _get_extension(certificate, x509.KeyUsage)
    key_usage: list[str] = []
    if isinstance(usage, x509.KeyUsage):
        for flag, label in _KEY_USAGE_NAMES.items():
            try:
                if getattr(usage, flag):
                    key_usage.append(label)
            except ValueError:  # encipher_only/decipher_only without keyAgreement
                continue
    eku = _get_extension(certificate, x509.ExtendedKeyUsage)
    constraints = _get_extension(certificate, x509.BasicConstraints)
    is_ca = isinstance(constraints, x509.BasicConstraints) and constraints.ca
    path_length = (
        constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None
    )
    basic = None
    if isinstance(constraints, x509.BasicConstraints):
        basic = "CA:TRUE" if constraints.ca else "CA:FALSE"
        if constraints.ca and constraints.path_length is not None:
            basic += f", pathlen:{constraints.path_length}"
    ski = _get_extension(certificate, x509.SubjectKeyIdentifier)
    aki = _get_extension(certificate, x509.AuthorityKeyIdentifier)
    cdp = _get_extension(certificate, x509.CRLDistributionPoints)
    crl_urls = [u for point in cdp or () for u in _uris(point.full_name)] if cdp else []
    aia = _get_extension(certificate, x509.AuthorityInformationAccess)
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
        subject=_display_name(certificate.subject),
        issuer=_display_name(certificate.issuer),
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
        ocsp_no_check=_get_extension(certificate, x509.OCSPNoCheck) is not None,
        is_self_signed=certificate.subject == certificate.issuer,
        sha256_fingerprint=_hex(certificate.fingerprint(hashes.SHA256())),
        sha1_fingerprint=_hex(certificate.fingerprint(hashes.SHA1())),  # noqa: S303 - display only
    )


def _serial_hex(serial_number: int) -> str:
    digits = format(serial_number, "X")
    # Even number of digits, as OpenSSL and most tools show it.
    return digits.zfill(len(digits) + len(digits) % 2)


def build_csr(
    *, private_key: PrivateKey, subject: x509.Name, sans: Sequence[x509.GeneralName] = ()
) -> bytes:
    """A PEM certificate signing request for `private_key`, signed with SHA-256 (SHA-384 for
    P-384). Used where this system makes its own key pairs (a client enrolling, the KMS's
    own server certificate): the private key never has to travel."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    csr = builder.sign(private_key, signature_hash_for(private_key))
    return csr.public_bytes(serialization.Encoding.PEM)
