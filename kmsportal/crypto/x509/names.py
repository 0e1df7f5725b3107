"""Distinguished names and subject alternative names: parsing and RFC 4514 display."""

from __future__ import annotations

import ipaddress
import re
import string
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import (
    NameOID,
    ObjectIdentifier,
)

from kmsportal.crypto.profiles import (
    SAN_TYPE_LABELS,
)
from kmsportal.crypto.x509.errors import SANError, SubjectError

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
    attributes: list[x509.NameAttribute[str]] = []
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
) -> x509.NameAttribute[str]:
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


def display_name(name: x509.Name) -> str:
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
