"""Name constraints (RFC 5280 4.2.1.10) and host name matching (RFC 6125)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from kmsportal.crypto.validation.paths import CandidatePath, ParsedCertificate
from kmsportal.crypto.validation.report import Check
from kmsportal.crypto.x509 import format_san


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _dns_touches(name: str, base: str) -> bool:
    """For excluded subtrees: a wildcard name also violates when it could match a host in
    the subtree (``*.example.com`` against an excluded ``www.example.com``)."""
    if _dns_within(name, base):
        return True
    if name.startswith("*."):
        rest = name[2:].lower().rstrip(".")
        bare = base.lower().lstrip(".").rstrip(".")
        return bare.endswith("." + rest) and bare.count(".") == rest.count(".") + 1
    return False


def _email_within(mailbox: str, base: str) -> bool:
    local, at, host = mailbox.rpartition("@")
    if not at or not local:
        return False
    if "@" in base:
        base_local, _, base_host = base.rpartition("@")
        return local == base_local and host.lower() == base_host.lower()
    if base.startswith("."):
        return host.lower().endswith(base.lower())
    return host.lower() == base.lower()


def _uri_host(uri: str) -> str | None:
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    return host or None


def _uri_within(uri: str, base: str) -> bool:
    host = _uri_host(uri)
    if host is None:
        return False
    if base.startswith("."):
        return host.lower().endswith(base.lower())
    return host.lower() == base.lower()


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    base_rdns = list(base.rdns)
    return list(name.rdns)[: len(base_rdns)] == base_rdns


def _ip_within(address: object, network: object) -> bool:
    if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return False
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return False
    return address.version == network.version and address in network


def _name_matches(name: x509.GeneralName, subtree: x509.GeneralName, *, excluded: bool) -> bool:
    """Whether ``name`` lies in ``subtree`` (both of the same type)."""
    if isinstance(name, x509.DNSName):
        check = _dns_touches if excluded else _dns_within
        return check(name.value, subtree.value)
    if isinstance(name, x509.RFC822Name):
        return _email_within(name.value, subtree.value)
    if isinstance(name, x509.UniformResourceIdentifier):
        return _uri_within(name.value, subtree.value)
    if isinstance(name, x509.IPAddress):
        return _ip_within(name.value, subtree.value)
    if isinstance(name, x509.DirectoryName):
        return _dn_within(name.value, subtree.value)
    return False


_CHECKABLE = (
    x509.DNSName,
    x509.RFC822Name,
    x509.UniformResourceIdentifier,
    x509.IPAddress,
    x509.DirectoryName,
)


def _constrained_names(cert: ParsedCertificate) -> tuple[list[x509.GeneralName], str | None]:
    """The names of ``cert`` subject to name constraints: the subject DN, emailAddress
    attributes of the subject (as email addresses) and every SAN."""
    names: list[x509.GeneralName] = []
    if cert.subject is not None and len(cert.subject) > 0:
        names.append(x509.DirectoryName(cert.subject))
        try:
            for attribute in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
                names.append(x509.RFC822Name(str(attribute.value)))
        except Exception as exc:
            return names, f"the subject email address of {cert.label} is malformed: {exc}"
    if cert.extensions is None:
        return names, f"the names of {cert.label} cannot be read ({cert.extension_error})"
    san = cert.ext(x509.SubjectAlternativeName)
    if isinstance(san, x509.SubjectAlternativeName):
        names.extend(san)
    return names, None


def check_name_constraints(path: CandidatePath) -> Check:
    levels: list[
        tuple[ParsedCertificate, list[x509.GeneralName] | None]
    ] = []  # permitted per issuer
    excluded: list[tuple[ParsedCertificate, x509.GeneralName]] = []
    problems: list[str] = []
    constrained = 0
    certificates = path.certificates
    # From the trust root (or the top of an incomplete path) down to the leaf.
    for index in range(len(certificates) - 1, -1, -1):
        cert = certificates[index]
        is_anchor = path.complete and index == len(certificates) - 1
        if not is_anchor and (levels or excluded) and (index == 0 or not cert.self_issued):
            names, problem = _constrained_names(cert)
            if problem:
                problems.append(problem)
            constrained += 1
            for name in names:
                problems.extend(_name_problems(cert, name, levels, excluded))
        if index == 0:
            break
        if cert.extensions is None:
            problems.append(
                f"the name constraints of {cert.label} cannot be read "
                f"({cert.extension_error}); nothing below it can be trusted"
            )
            continue
        constraints = cert.ext(x509.NameConstraints)
        if isinstance(constraints, x509.NameConstraints):
            levels.append((cert, list(constraints.permitted_subtrees or []) or None))
            excluded.extend((cert, s) for s in constraints.excluded_subtrees or [])
    if problems:
        return Check("name constraints", False, "; ".join(dict.fromkeys(problems)))
    if not levels and not excluded:
        return Check("name constraints", True, "no CA in the path constrains names")
    return Check(
        "name constraints",
        True,
        f"the names of {constrained} certificate{'s' if constrained != 1 else ''} lie within "
        "every permitted subtree and outside every excluded one",
    )


def _name_problems(
    cert: ParsedCertificate,
    name: x509.GeneralName,
    levels: list[tuple[ParsedCertificate, list[x509.GeneralName] | None]],
    excluded: list[tuple[ParsedCertificate, x509.GeneralName]],
) -> list[str]:
    problems: list[str] = []
    shown = format_san(name)
    for issuer, subtree in excluded:
        if type(subtree) is type(name):
            if not isinstance(name, _CHECKABLE):
                problems.append(
                    f"{cert.label} has the name {shown}, of a type whose excluded subtrees "
                    f"(set by {issuer.label}) cannot be checked"
                )
            elif _name_matches(name, subtree, excluded=True):
                problems.append(
                    f"{shown} of {cert.label} is in the subtree {format_san(subtree)} that "
                    f"{issuer.label} excludes"
                )
    for issuer, permitted in levels:
        if permitted is None:
            continue
        same_type = [s for s in permitted if type(s) is type(name)]
        if not same_type:
            continue  # no constraint on this type of name at this level
        if not isinstance(name, _CHECKABLE):
            problems.append(
                f"{cert.label} has the name {shown}, of a type whose permitted subtrees "
                f"(set by {issuer.label}) cannot be checked"
            )
        elif not any(_name_matches(name, s, excluded=False) for s in same_type):
            allowed = ", ".join(format_san(s) for s in same_type)
            problems.append(
                f"{shown} of {cert.label} is outside the subtrees {issuer.label} permits "
                f"({allowed})"
            )
    return problems


# critical extensions (RFC 5280 6.1.4 (o), 6.1.5 (f))

#: Extensions this validator processes, or which carry no constraint for it to enforce.

_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def normalize_host(hostname: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """An IP address, or a lower-case A-label DNS name; ValueError if neither (never
    anything else)."""
    if not isinstance(hostname, str) or len(hostname) > 1000:
        raise ValueError(hostname)
    host = hostname.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    host = host.rstrip(".")
    if not host or "*" in host:
        raise ValueError(hostname)
    try:
        host = host.encode("idna").decode("ascii").lower()
    except Exception:
        raise ValueError(hostname) from None
    if not _HOST.fullmatch(host) or ".." in host or len(host) > 253:
        raise ValueError(hostname)
    return host


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125 section 6.4.3: exact match, or ``*`` as the whole leftmost label matching
    exactly one label."""
    pattern = pattern.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return False


def check_hostname(leaf: ParsedCertificate, hostname: object) -> Check:
    if hostname is None:
        return Check("hostname", None, "no host name was given")
    try:
        host = normalize_host(hostname)
    except ValueError:
        return Check("hostname", False, f"{hostname!r} is not a valid host name or IP address")
    if leaf.extensions is None:
        return Check("hostname", False, "the certificate's names cannot be read")
    san = leaf.ext(x509.SubjectAlternativeName)
    names = list(san) if isinstance(san, x509.SubjectAlternativeName) else []
    for name in names:
        if (
            isinstance(host, str)
            and isinstance(name, x509.DNSName)
            and _dns_matches(name.value, host)
        ):
            return Check("hostname", True, f"{hostname} matches {format_san(name)}")
        if not isinstance(host, str) and isinstance(name, x509.IPAddress) and name.value == host:
            return Check("hostname", True, f"{hostname} matches {format_san(name)}")
    if not names:
        return Check(
            "hostname",
            False,
            "the certificate has no subject alternative names; host names are matched "
            "against SANs only, never against the CN",
        )
    listed = ", ".join(format_san(n) for n in names)
    return Check("hostname", False, f"{hostname} does not match the certificate's names ({listed})")


# revocation
