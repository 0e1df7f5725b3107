"""Certificate path validation that says exactly which check failed, and never raises.

:func:`validate_certificate` builds candidate paths from a leaf to a trust root itself
(issuer name match, AKI/SKI, signature verification) with backtracking: every candidate
issuer is tried, depth first, within a bounded amount of work, and the first path on which
every path check passes is chosen; when none passes, the report lists every path tried and
why each failed. Each aspect is one :class:`Check`, in a fixed order (:data:`CHECK_NAMES`).

Every rule of RFC 5280 section 6.1 that applies to the purposes offered here lives in this
module, for every purpose (``any`` included):

* signatures of every link, validity periods (the trust root's too, as OpenSSL does);
* basic constraints (CA:TRUE for every issuer) and pathLenConstraint;
* name constraints (section 6.1.4 (g), 4.2.1.10) for DNS names, IP addresses, email
  addresses (SAN and the subject's emailAddress), URIs (their host) and directory names;
  a name type the constraint cannot be checked for is a failure (fail closed);
* critical extensions this validator does not process are refused (section 6.1.4 (o),
  6.1.5 (f)); certificates whose extensions cannot be parsed (duplicates, invalid values)
  are refused;
* key and signature algorithm minimums: RSA at least 2048 bits, EC only on P-256, P-384 and
  P-521, Ed25519/Ed448; no DSA; signatures with SHA-256 or stronger (no MD5, no SHA-1). The
  trust root's own self-signature is not judged (it is trusted as configured, RFC 5280
  6.1.1 (d)), its key is;
* key usage (keyCertSign for issuers) and extended key usage per purpose (an EKU in a CA
  certificate restricts what it may issue).

For ``server`` and ``client`` the decision is also cross-checked with
``cryptography.x509.verification``; when that verifier rejects the chain, its message is put
into the check it concerns. It is a second opinion, never the only place a rule lives.

Never raises: any certificate (malformed extensions, unknown algorithms), any host name and
any failure of a revocation source becomes a failed or undecided check with a reason.
:func:`validate_certificate_data` takes raw bytes (PEM or DER) and reports undecodable input
the same way.

Simplifications (documented rather than hidden): certificate policies are not processed (a
chain that requires an explicit policy is refused rather than accepted unchecked); host
names are matched only against SANs, never the CN (RFC 6125 section 6.4.4, CAB BR).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from kmsportal.crypto.x509 import extended_key_usage_name, format_name, format_san

__all__ = [
    "CHECK_NAMES",
    "MAX_PATHS_TRIED",
    "MAX_PATH_LENGTH",
    "MAX_SIGNATURE_CHECKS",
    "Check",
    "Purpose",
    "RevocationStatus",
    "ValidationReport",
    "validate_certificate",
    "validate_certificate_data",
]

Purpose = Literal["server", "client", "any"]
PURPOSES: tuple[str, ...] = ("server", "client", "any")

#: The checks of a report, always in this order.
CHECK_NAMES: tuple[str, ...] = (
    "decoding",
    "path",
    "signatures",
    "validity period",
    "basic constraints",
    "name constraints",
    "critical extensions",
    "algorithms",
    "key usage and EKU",
    "hostname",
    "revocation",
)

#: The checks that depend on the chosen path (a path is valid when none of them fails).
_PATH_CHECKS = (
    "signatures",
    "validity period",
    "basic constraints",
    "name constraints",
    "critical extensions",
    "algorithms",
    "key usage and EKU",
)

#: Longest chain (leaf and root included) that the path builder follows.
MAX_PATH_LENGTH = 10
#: Complete paths evaluated at most before the builder gives up looking for a valid one.
MAX_PATHS_TRIED = 32
#: Signature verifications the builder may spend (each costs up to a few ms).
MAX_SIGNATURE_CHECKS = 256
#: Input larger than this is not parsed (a certificate is a few KiB; a bundle far less).
MAX_INPUT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RevocationStatus:
    """What a revocation source (CRL, OCSP, the CA database) says about one certificate.

    ``source`` names where the answer came from (e.g. "CRL #12 of CN=Issuing CA"); for an
    ``unknown`` status it may say why no answer was obtained.
    """

    status: Literal["good", "revoked", "unknown"]
    reason: x509.ReasonFlags | None = None
    revoked_at: dt.datetime | None = None
    source: str = ""


@dataclass(frozen=True)
class Check:
    """One aspect of a validation; ``passed`` is None when it did not apply or was skipped."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    """The outcome: ``ok`` is true when no check failed and a path to a trust root exists.

    ``path`` is the chain that was chosen, leaf first (incomplete when the path check failed).
    ``paths_tried`` describes every complete path evaluated and why it was not valid (empty
    when the first path was valid). ``cross_checked`` tells whether ``cryptography``'s
    verifier ran; ``verifier_error`` is its message when it rejected the chain.
    """

    ok: bool
    checks: list[Check]
    path: list[x509.Certificate] = field(default_factory=list)
    cross_checked: bool = False
    verifier_error: str | None = None
    paths_tried: list[str] = field(default_factory=list)

    def check(self, name: str) -> Check:
        """The check called ``name`` (one of :data:`CHECK_NAMES`)."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def failed(self) -> list[Check]:
        """The checks that failed, in report order."""
        return [c for c in self.checks if c.passed is False]

    @property
    def revocation_checked(self) -> bool:
        """True when every certificate's revocation status was established (good)."""
        return self.check("revocation").passed is True


# --- a certificate, parsed defensively -------------------------------------------------------


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


_T = TypeVar("_T")


class _Cert:
    """A certificate with everything the checks read, parsed once; never raises.

    A part that cannot be read is None and its problem is kept in ``problems``.
    """

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert
        self.problems: list[str] = []
        fingerprint = self._get(lambda: cert.fingerprint(hashes.SHA256()), "fingerprint")
        self.fingerprint = id(cert).to_bytes(8, "big") if fingerprint is None else fingerprint
        self.subject: x509.Name | None = self._get(lambda: cert.subject, "subject")
        self.issuer: x509.Name | None = self._get(lambda: cert.issuer, "issuer")
        self.extensions: x509.Extensions | None = self._get(lambda: cert.extensions, "extensions")
        self.extension_error = None if self.extensions is not None else self.problems[-1]
        self.public_key = None
        try:
            self.public_key = cert.public_key()
        except Exception as exc:  # unknown or malformed key
            self.key_error = _describe_error(exc)
        else:
            self.key_error = ""
        try:
            self.subject_label = format_name(self.subject) if self.subject is not None else ""
        except Exception:
            self.subject_label = ""
        try:
            serial = f"{cert.serial_number:X}"
        except Exception:
            serial = "?"
        self.label = (
            f"'{self.subject_label}'"
            if self.subject_label
            else f"the certificate with serial {serial}"
        )
        self.ski = self._key_id(x509.SubjectKeyIdentifier)
        self.aki = self._key_id(x509.AuthorityKeyIdentifier)

    def _get(self, read: Callable[[], _T], what: str) -> _T | None:
        try:
            return read()
        except Exception as exc:
            self.problems.append(f"its {what} cannot be read: {_describe_error(exc)}")
            return None

    def _key_id(self, kind: type[x509.ExtensionType]) -> bytes | None:
        value = self.ext(kind)
        if isinstance(value, x509.SubjectKeyIdentifier):
            return value.digest
        if isinstance(value, x509.AuthorityKeyIdentifier):
            return value.key_identifier
        return None

    def ext(self, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
        if self.extensions is None:
            return None
        try:
            return self.extensions.get_extension_for_class(kind).value
        except Exception:
            return None

    @property
    def self_issued(self) -> bool:
        return self.subject is not None and self.subject == self.issuer

    @property
    def is_ca(self) -> bool:
        constraints = self.ext(x509.BasicConstraints)
        return isinstance(constraints, x509.BasicConstraints) and constraints.ca

    def time(self, which: str) -> dt.datetime | None:
        try:
            moment: dt.datetime = getattr(self.cert, which)
        except Exception:
            return None
        return moment


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _path_names(path: Sequence[_Cert]) -> str:
    return " → ".join(c.subject_label or "(empty subject)" for c in path)


# --- path building with backtracking --------------------------------------------------------


@dataclass
class _Path:
    certificates: list[_Cert]
    complete: bool
    problem: str = ""

    @property
    def issuers(self) -> list[_Cert]:
        return self.certificates[1:]

    @property
    def below_anchor(self) -> list[_Cert]:
        return self.certificates[:-1] if self.complete else list(self.certificates)


class _Builder:
    """Depth-first path building over every candidate issuer, bounded in work."""

    def __init__(self, leaf: _Cert, intermediates: Sequence[_Cert], roots: Sequence[_Cert]):
        self.leaf = leaf
        self.root_fingerprints = {r.fingerprint for r in roots}
        pool: dict[bytes, _Cert] = {}
        for cert in [*roots, *intermediates]:
            pool.setdefault(cert.fingerprint, cert)
        self.pool = list(pool.values())
        self.signature_checks = 0
        self.verified: dict[tuple[bytes, bytes], bool] = {}
        self.dead_ends: list[_Path] = []
        self.exhausted = False

    def signed_by(self, cert: _Cert, issuer: _Cert) -> bool:
        key = (cert.fingerprint, issuer.fingerprint)
        if key not in self.verified:
            self.signature_checks += 1
            self.verified[key] = _signed_by(cert, issuer)
        return self.verified[key]

    def candidates(self, cert: _Cert, path: list[_Cert]) -> list[_Cert]:
        if cert.issuer is None:
            return []
        used = {c.fingerprint for c in path}
        # RFC 4158 loop prevention: a subject and key pair appears once in a path.
        used_pairs = {(c.subject_label, _key_bytes(c)) for c in path}
        found = []
        for candidate in self.pool:
            if candidate.fingerprint in used or candidate.subject != cert.issuer:
                continue
            if (candidate.subject_label, _key_bytes(candidate)) in used_pairs:
                continue
            found.append(candidate)

        def preference(candidate: _Cert) -> tuple[int, int, int, int]:
            # A key identifier mismatch is tried last (when both are present).
            key_id_matches = not (
                cert.aki is not None and candidate.ski is not None and cert.aki != candidate.ski
            )
            if self.signature_checks < MAX_SIGNATURE_CHECKS:
                verifies = self.signed_by(cert, candidate)
            else:
                verifies = key_id_matches
            return (
                0 if verifies else 1,
                0 if key_id_matches else 1,
                0 if _currently_valid(candidate) else 1,
                0 if candidate.fingerprint in self.root_fingerprints else 1,
            )

        return sorted(found, key=preference)

    def paths(self) -> Iterator[list[_Cert]]:
        """Complete paths (ending at a trust root), most promising first."""
        yield from self._extend([self.leaf])

    def _extend(self, path: list[_Cert]) -> Iterator[list[_Cert]]:
        current = path[-1]
        if current.fingerprint in self.root_fingerprints:
            yield list(path)
            return
        if len(path) >= MAX_PATH_LENGTH:
            self.dead_ends.append(
                _Path(
                    list(path),
                    False,
                    f"no trust root was reached within {MAX_PATH_LENGTH} certificates",
                )
            )
            return
        if self.signature_checks >= MAX_SIGNATURE_CHECKS:
            self.exhausted = True
            return
        candidates = self.candidates(current, path)
        if not candidates:
            if current.self_issued:
                problem = f"{current.label} is self-signed but is not one of the trust roots"
            else:
                issuer = format_name(current.issuer) if current.issuer is not None else "?"
                problem = (
                    f"the issuer '{issuer}' of {current.label} was not found among the "
                    "intermediates or the trust roots"
                )
            self.dead_ends.append(_Path(list(path), False, problem))
            return
        for candidate in candidates:
            path.append(candidate)
            yield from self._extend(path)
            path.pop()


def _key_bytes(cert: _Cert) -> bytes:
    try:
        from cryptography.hazmat.primitives import serialization

        der: bytes = cert.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:
        return cert.fingerprint
    return der


def _currently_valid(cert: _Cert) -> bool:
    now = dt.datetime.now(dt.UTC)
    start, end = cert.time("not_valid_before_utc"), cert.time("not_valid_after_utc")
    return start is not None and end is not None and start <= now <= end


def _signed_by(cert: _Cert, issuer: _Cert) -> bool:
    try:
        cert.cert.verify_directly_issued_by(issuer.cert)
    except Exception:
        return False
    return True


# --- the individual checks -------------------------------------------------------------------


def _check_signatures(path: _Path, signed_by: Callable[[_Cert, _Cert], bool]) -> Check:
    links = list(zip(path.certificates, path.issuers, strict=False))
    if not links:
        if path.complete:
            return Check("signatures", None, "the certificate is itself a trust root")
        return Check("signatures", None, "not checked: no issuer certificate was found")
    for cert, issuer in links:
        if not signed_by(cert, issuer):
            return Check(
                "signatures",
                False,
                f"the signature of {cert.label} does not verify with the key of {issuer.label}",
            )
    count = len(links)
    detail = f"{count} signature{'s' if count != 1 else ''} verified"
    if not path.complete:
        return Check("signatures", True, detail + " (up to where the path breaks off)")
    return Check("signatures", True, detail)


def _check_validity(path: _Path, now: dt.datetime) -> Check:
    problems: list[str] = []
    for cert in path.certificates:
        start, end = cert.time("not_valid_before_utc"), cert.time("not_valid_after_utc")
        if start is None or end is None:
            problems.append(f"the validity period of {cert.label} cannot be read")
        elif now < start:
            problems.append(f"{cert.label} is not yet valid (valid from {_time(start)})")
        elif now > end:
            problems.append(f"{cert.label} expired on {_time(end)}")
    if problems:
        return Check("validity period", False, "; ".join(problems))
    count = len(path.certificates)
    return Check(
        "validity period",
        True,
        f"{'all ' if count > 1 else ''}{count} certificate{'s are' if count > 1 else ' is'} "
        f"valid on {_time(now)}",
    )


def _check_basic_constraints(path: _Path, leaf: _Cert, purpose: str) -> Check:
    problems: list[str] = []
    for index, issuer in enumerate(path.issuers, start=1):
        constraints = issuer.ext(x509.BasicConstraints)
        if not (isinstance(constraints, x509.BasicConstraints) and constraints.ca):
            problems.append(
                f"{issuer.label} issues certificates but is not a CA certificate "
                "(basicConstraints CA:TRUE is missing)"
            )
            continue
        # RFC 5280 4.2.1.9: pathLenConstraint counts the non-self-issued intermediate CA
        # certificates that may follow this one in the path.
        below = sum(1 for c in path.certificates[1:index] if not c.self_issued)
        if constraints.path_length is not None and below > constraints.path_length:
            problems.append(
                f"{issuer.label} allows {constraints.path_length} intermediate CA(s) below "
                f"it (path length), but the chain has {below}"
            )
    if purpose != "any" and leaf.is_ca and len(path.certificates) > 1:
        problems.append(
            f"the leaf {leaf.label} is a CA certificate; a {purpose} certificate must not be a CA"
        )
    if problems:
        return Check("basic constraints", False, "; ".join(problems))
    cas = len(path.issuers)
    detail = (
        f"{cas} issuing certificate{'s are CAs' if cas != 1 else ' is a CA'} within path length"
    )
    if purpose != "any":
        detail += "; the leaf is not a CA"
    return Check("basic constraints", True, detail)


# name constraints (RFC 5280 4.2.1.10, 6.1.4 (g), 6.1.3 (b)/(c))


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


def _constrained_names(cert: _Cert) -> tuple[list[x509.GeneralName], str | None]:
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


def _check_name_constraints(path: _Path) -> Check:
    levels: list[tuple[_Cert, list[x509.GeneralName] | None]] = []  # permitted per issuer
    excluded: list[tuple[_Cert, x509.GeneralName]] = []
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
    cert: _Cert,
    name: x509.GeneralName,
    levels: list[tuple[_Cert, list[x509.GeneralName] | None]],
    excluded: list[tuple[_Cert, x509.GeneralName]],
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
_UNDERSTOOD = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.SUBJECT_INFORMATION_ACCESS,
        ExtensionOID.OCSP_NO_CHECK,
        ExtensionOID.TLS_FEATURE,
        ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS,
    }
)


def _check_critical_extensions(path: _Path) -> Check:
    problems: list[str] = []
    for cert in path.certificates:
        if cert.extensions is None:
            problems.append(
                f"the extensions of {cert.label} cannot be read: {cert.extension_error}"
            )
            continue
        for extension in cert.extensions:
            if extension.critical and extension.oid not in _UNDERSTOOD:
                name = getattr(extension.oid, "_name", "Unknown OID")
                label = extension.oid.dotted_string
                if name and name != "Unknown OID":
                    label = f"{name} ({label})"
                problems.append(
                    f"{cert.label} has the critical extension {label}, which this validator "
                    "does not process"
                )
        constraints = cert.ext(x509.PolicyConstraints)
        if isinstance(constraints, x509.PolicyConstraints) and (
            constraints.require_explicit_policy is not None
        ):
            problems.append(
                f"{cert.label} requires an explicit certificate policy; this validator does "
                "not process certificate policies, so it cannot accept the path"
            )
    if problems:
        return Check("critical extensions", False, "; ".join(problems))
    return Check("critical extensions", True, "every critical extension in the path is understood")


# algorithms

_STRONG_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512, hashes.SHA3_256, hashes.SHA3_384,
                  hashes.SHA3_512)  # fmt: skip
MIN_RSA_BITS = 2048


def _key_problem(cert: _Cert) -> str | None:
    key = cert.public_key
    if key is None:
        return f"the public key of {cert.label} cannot be used ({cert.key_error})"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"{cert.label} has an RSA key of {key.key_size} bits; at least 2048 are needed"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _STRONG_CURVES:
            return (
                f"{cert.label} has an EC key on {key.curve.name}; only P-256, P-384 and P-521 "
                "are accepted"
            )
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if isinstance(key, dsa.DSAPublicKey):
        return f"{cert.label} has a DSA key; DSA is not accepted"
    return f"{cert.label} has a {type(key).__name__.removeprefix('_')} key, which is not accepted"


def _signature_problem(cert: _Cert) -> str | None:
    try:
        oid = cert.cert.signature_algorithm_oid
        name = getattr(oid, "_name", None) or oid.dotted_string
    except Exception as exc:
        return f"the signature algorithm of {cert.label} cannot be read ({_describe_error(exc)})"
    try:
        algorithm = cert.cert.signature_hash_algorithm
    except Exception:
        return f"{cert.label} is signed with {name}, which is not supported"
    if algorithm is None:
        if name in ("ed25519", "ed448"):
            return None
        return f"{cert.label} is signed with {name}, which is not accepted"
    if isinstance(algorithm, _STRONG_HASHES):
        return None
    return f"{cert.label} is signed with {name} ({algorithm.name}); SHA-256 or stronger is needed"


def _check_algorithms(path: _Path) -> Check:
    problems: list[str] = []
    for index, cert in enumerate(path.certificates):
        problem = _key_problem(cert)
        if problem:
            problems.append(problem)
        is_anchor = path.complete and index == len(path.certificates) - 1
        if not is_anchor:
            problem = _signature_problem(cert)
            if problem:
                problems.append(problem)
    if problems:
        return Check("algorithms", False, "; ".join(problems))
    return Check(
        "algorithms",
        True,
        "every key and signature meets the minimums (RSA ≥ 2048 bits, P-256 or larger, "
        "SHA-256 or stronger)",
    )


# key usage and EKU

_PURPOSE_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _eku_names(eku: x509.ExtendedKeyUsage) -> str:
    return ", ".join(extended_key_usage_name(o) for o in eku) or "nothing"


def _check_usage(path: _Path, leaf: _Cert, purpose: str) -> Check:
    problems: list[str] = []
    wanted = _PURPOSE_EKU.get(purpose)
    for issuer in path.issuers:
        usage = issuer.ext(x509.KeyUsage)
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            problems.append(f"{issuer.label} may not sign certificates (no keyCertSign)")
        # An EKU in a CA certificate constrains what it may issue (common practice, and
        # enforced by cryptography's and browsers' verifiers).
        ca_eku = issuer.ext(x509.ExtendedKeyUsage)
        if (
            wanted is not None
            and isinstance(ca_eku, x509.ExtendedKeyUsage)
            and wanted not in ca_eku
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ca_eku
        ):
            problems.append(
                f"{issuer.label} is restricted to {_eku_names(ca_eku)} and may not issue "
                f"{extended_key_usage_name(wanted)} certificates"
            )
    if wanted is not None:
        eku = leaf.ext(x509.ExtendedKeyUsage)
        # RFC 5280 4.2.1.12: without the extension the key is not restricted by EKU.
        if (
            isinstance(eku, x509.ExtendedKeyUsage)
            and wanted not in eku
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
        ):
            problems.append(
                f"the leaf's extended key usage ({_eku_names(eku)}) does not include "
                f"{extended_key_usage_name(wanted)}, needed for a TLS {purpose}"
            )
        usage = leaf.ext(x509.KeyUsage)
        if isinstance(usage, x509.KeyUsage) and not (
            usage.digital_signature
            or usage.key_agreement
            or (purpose == "server" and usage.key_encipherment)
        ):
            problems.append(
                f"the leaf's key usage does not allow TLS {purpose} authentication "
                "(digitalSignature is missing)"
            )
    if problems:
        return Check("key usage and EKU", False, "; ".join(problems))
    if wanted is None:
        return Check("key usage and EKU", True, "the CAs may sign certificates; any leaf purpose")
    return Check(
        "key usage and EKU",
        True,
        f"the leaf may be used as a TLS {purpose} ({extended_key_usage_name(wanted)}); "
        "the CAs may sign certificates",
    )


# hostname

_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def _normalize_host(hostname: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
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


def _check_hostname(leaf: _Cert, hostname: object) -> Check:
    if hostname is None:
        return Check("hostname", None, "no host name was given")
    try:
        host = _normalize_host(hostname)
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


def _describe_status(cert: _Cert, status: RevocationStatus) -> str:
    source = f" ({status.source})" if status.source else ""
    if status.status != "revoked":
        return f"{cert.label}: {status.status}{source}"
    parts = [f"{cert.label} was revoked"]
    if status.revoked_at is not None:
        parts.append(f"on {_time(status.revoked_at)}")
    if status.reason is not None:
        parts.append(f"(reason: {status.reason.value})")
    return " ".join(parts) + source


def _ask(
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None], cert: _Cert
) -> RevocationStatus:
    try:
        status = is_revoked(cert.cert)
    except Exception as exc:
        return RevocationStatus("unknown", source=f"the lookup failed: {_describe_error(exc)}")
    if not isinstance(status, RevocationStatus):
        return RevocationStatus("unknown")
    return status


def _check_revocation(
    path: _Path,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None,
    *,
    required: bool,
) -> Check:
    if is_revoked is None:
        return Check("revocation", None, "not checked: no revocation source was given")
    if not path.below_anchor:
        return Check("revocation", None, "not checked: the certificate is itself a trust root")
    statuses = [(cert, _ask(is_revoked, cert)) for cert in path.below_anchor]
    revoked = [_describe_status(c, s) for c, s in statuses if s.status == "revoked"]
    if revoked:
        return Check("revocation", False, "; ".join(revoked))
    described = "; ".join(_describe_status(c, s) for c, s in statuses)
    if any(s.status != "good" for _, s in statuses):
        if required:
            return Check("revocation", False, f"status not established: {described}")
        # Soft-fail, as TLS clients do: an unknown status is reported but is not a failure.
        return Check("revocation", None, f"status not known for every certificate: {described}")
    return Check("revocation", True, described)


# --- the library verifier --------------------------------------------------------------------

# Which check a message of cryptography's verifier concerns; the first matching topic wins.
_VERIFIER_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostname", ("subjectaltname", "subject alternative name", "hostname", "2.5.29.17")),
    ("validity period", ("validity", "valid at", "expired", "not yet valid")),
    ("name constraints", ("name constraint", "nameconstraint", "excluded", "permitted")),
    ("critical extensions", ("critical",)),
    ("algorithms", ("key size", "weak", "public key", "algorithm")),
    ("key usage and EKU", ("eku", "keyusage", "key usage", "extendedkeyusage")),
    ("basic constraints", ("basicconstraints", "basic constraints", "path length", "pathlen")),
    ("signatures", ("signature",)),
)
_CERT_REPR = re.compile(r"<Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>")


def _clean_verifier_message(message: str) -> str:
    message = message.removeprefix("validation failed: ")
    return _CERT_REPR.sub(lambda m: f"'{m.group(1)}'", message)


def _verifier_subject(leaf: _Cert, hostname: object) -> x509.DNSName | x509.IPAddress | None:
    """The name the server verifier checks: ``hostname`` if valid, else the leaf's first
    DNS or IP SAN (so that the rest of the chain is still cross-checked)."""
    if hostname is not None:
        try:
            host = _normalize_host(hostname)
            if isinstance(host, str):
                return x509.DNSName(host)
            return x509.IPAddress(host)
        except Exception:  # noqa: S110 - not a name the verifier takes; try the SANs
            pass
    san = leaf.ext(x509.SubjectAlternativeName)
    for name in san if isinstance(san, x509.SubjectAlternativeName) else ():
        try:
            if isinstance(name, x509.DNSName) and not name.value.startswith("*."):
                return x509.DNSName(name.value)
            if isinstance(name, x509.IPAddress):
                return x509.IPAddress(name.value)
        except Exception:  # noqa: S112 - a SAN the verifier cannot take
            continue
    return None


def _run_verifier(
    *,
    leaf: _Cert,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    purpose: str,
    hostname: object,
    now: dt.datetime,
) -> tuple[bool, str | None]:
    """(ran, rejection message) of cryptography's verifier.

    It runs for ``server`` (with a DNS/IP name to check) and for ``client`` with SANs (its
    client policy requires a SAN; RFC 5280 does not), when trust roots are given. It cannot
    judge ``any``. Whatever it raises besides a verdict means it did not run.
    """
    if purpose not in _PURPOSE_EKU or not trust_roots:
        return False, None
    try:
        builder = verification.PolicyBuilder().store(verification.Store(list(trust_roots)))
        builder = builder.time(now)
        if purpose == "server":
            subject = _verifier_subject(leaf, hostname)
            if subject is None:
                return False, None
            verifier: verification.ServerVerifier | verification.ClientVerifier = (
                builder.build_server_verifier(subject)
            )
        else:
            if not isinstance(leaf.ext(x509.SubjectAlternativeName), x509.SubjectAlternativeName):
                return False, None
            verifier = builder.build_client_verifier()
        try:
            verifier.verify(leaf.cert, list(intermediates))
        except verification.VerificationError as exc:
            message = _clean_verifier_message(str(exc))
            if "unsupported" in message.lower():
                # A limit of the library (e.g. URI name constraints), not a verdict.
                return False, None
            return True, message
    except Exception:
        return False, None
    return True, None


def _merge_verifier_error(checks: list[Check], message: str) -> list[Check]:
    lowered = message.lower()
    target = next(
        (name for name, words in _VERIFIER_TOPICS if any(w in lowered for w in words)), None
    )
    if target is None:
        target = next((c.name for c in checks if c.passed is False), "path")
    merged: list[Check] = []
    for check in checks:
        if check.name == target:
            if check.passed is False:
                check = Check(check.name, False, f"{check.detail} (verifier: {message})")
            else:
                check = Check(check.name, False, f"rejected by the certificate verifier: {message}")
        merged.append(check)
    return merged


# --- entry points ----------------------------------------------------------------------------


def _evaluate(
    path: _Path, leaf: _Cert, purpose: str, now: dt.datetime, builder: _Builder
) -> dict[str, Check]:
    evaluations = {
        "signatures": lambda: _check_signatures(path, builder.signed_by),
        "validity period": lambda: _check_validity(path, now),
        "basic constraints": lambda: _check_basic_constraints(path, leaf, purpose),
        "name constraints": lambda: _check_name_constraints(path),
        "critical extensions": lambda: _check_critical_extensions(path),
        "algorithms": lambda: _check_algorithms(path),
        "key usage and EKU": lambda: _check_usage(path, leaf, purpose),
    }
    return {name: _guarded(name, run) for name, run in evaluations.items()}


def _guarded(name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # a malformed certificate no check anticipated
        return Check(name, False, f"could not be evaluated: {_describe_error(exc)}")


def _failure_summary(checks: dict[str, Check]) -> str:
    failed = [c for c in checks.values() if c.passed is False]
    return "; ".join(f"{c.name}: {c.detail}" for c in failed)


def _choose_path(
    leaf: _Cert, builder: _Builder, purpose: str, now: dt.datetime
) -> tuple[_Path, dict[str, Check], list[str]]:
    tried: list[str] = []
    first: tuple[_Path, dict[str, Check]] | None = None
    for certificates in builder.paths():
        path = _Path(certificates, complete=True)
        checks = _evaluate(path, leaf, purpose, now, builder)
        if all(c.passed is not False for c in checks.values()):
            return path, checks, tried
        tried.append(f"{_path_names(certificates)}: {_failure_summary(checks)}")
        if first is None:
            first = (path, checks)
        if len(tried) >= MAX_PATHS_TRIED:
            builder.exhausted = True
            break
    if first is not None:
        return first[0], first[1], tried
    if builder.dead_ends:
        dead_end = max(builder.dead_ends, key=lambda p: len(p.certificates))
    else:
        dead_end = _Path([leaf], False, "the path search stopped: too much work (bounded search)")
    return dead_end, _evaluate(dead_end, leaf, purpose, now, builder), tried


def _path_check(path: _Path, tried: list[str], builder: _Builder) -> Check:
    if not path.complete:
        problem = path.problem
        others = [p.problem for p in builder.dead_ends if p.problem != problem]
        if others:
            problem += "; other candidates: " + "; ".join(dict.fromkeys(others))
        if builder.exhausted:
            problem += " (the search was bounded and stopped early)"
        return Check("path", False, problem)
    names = _path_names(path.certificates) + " (trust root)"
    if len(tried) > 1:
        # Complete, yet a path check fails on every candidate: list them all.
        listing = " | ".join(f"path {n}: {t}" for n, t in enumerate(tried, start=1))
        return Check("path", True, f"{names}; no valid path among {len(tried)} tried: {listing}")
    return Check("path", True, names)


def _report_error(message: str, checks: list[Check] | None = None) -> ValidationReport:
    given = {c.name: c for c in checks or []}
    filled = [
        given.get(name) or Check(name, None, "not checked: " + message) for name in CHECK_NAMES
    ]
    if not any(c.passed is False for c in filled):
        filled[0] = Check("decoding", False, message)
    return ValidationReport(ok=False, checks=filled)


def validate_certificate(
    *,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    purpose: Purpose,
    hostname: str | None,
    now: dt.datetime | None = None,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None = None,
    revocation_required: bool = False,
) -> ValidationReport:
    """Validate ``leaf`` for ``purpose`` against ``trust_roots`` and report every check.

    ``intermediates`` may be in any order and contain unrelated certificates, old copies
    and cross-certificates: every candidate is tried. ``hostname`` (a DNS name or IP
    address) is matched against the leaf's SANs when given. ``now`` is the validation time
    (aware; default: the current time). ``is_revoked`` is called for every certificate of
    the chosen path except the trust root; returning None means "unknown". An unknown
    status leaves the revocation check undecided (None), or failed with
    ``revocation_required``.

    The report's ``ok`` is true when the path check passed and no check failed. Never
    raises: bad arguments and malformed certificates become failed checks.
    """
    try:
        return _validate(
            leaf=leaf,
            intermediates=intermediates,
            trust_roots=trust_roots,
            purpose=purpose,
            hostname=hostname,
            now=now,
            is_revoked=is_revoked,
            revocation_required=revocation_required,
        )
    except Exception as exc:  # the promise: a report, whatever the input
        return _report_error(f"the validation could not be completed: {_describe_error(exc)}")


def _validate(
    *,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    purpose: str,
    hostname: object,
    now: dt.datetime | None,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None,
    revocation_required: bool,
) -> ValidationReport:
    if not isinstance(leaf, x509.Certificate):
        return _report_error(f"the input is not a certificate ({type(leaf).__name__})")
    extra = [c for c in [*intermediates, *trust_roots] if not isinstance(c, x509.Certificate)]
    if extra:
        return _report_error(
            "the chain or the trust roots contain something else than certificates"
        )
    if purpose not in PURPOSES:
        return _report_error(f"unknown purpose {purpose!r}; use 'server', 'client' or 'any'")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif not isinstance(now, dt.datetime) or now.tzinfo is None:
        return _report_error("the validation time must be a timezone-aware datetime")

    leaf_cert = _Cert(leaf)
    roots = [_Cert(c) for c in trust_roots]
    pool = [_Cert(c) for c in intermediates]
    builder = _Builder(leaf_cert, pool, roots)
    path, path_checks, tried = _choose_path(leaf_cert, builder, purpose, now)

    decoding = Check("decoding", True, "the certificate was read")
    if leaf_cert.problems:
        decoding = Check("decoding", False, f"{leaf_cert.label}: " + "; ".join(leaf_cert.problems))
    checks = [
        decoding,
        _guarded("path", lambda: _path_check(path, tried, builder)),
        *(path_checks[name] for name in _PATH_CHECKS),
        _guarded("hostname", lambda: _check_hostname(leaf_cert, hostname)),
        _guarded(
            "revocation",
            lambda: _check_revocation(path, is_revoked, required=revocation_required),
        ),
    ]
    if not path.complete:
        checks[1] = Check("path", False, checks[1].detail)
    ran, verifier_error = _run_verifier(
        leaf=leaf_cert,
        intermediates=[c.cert for c in pool],
        trust_roots=[c.cert for c in roots],
        purpose=purpose,
        hostname=hostname,
        now=now,
    )
    if verifier_error is not None:
        checks = _merge_verifier_error(checks, verifier_error)
    ok = path.complete and all(c.passed is not False for c in checks)
    return ValidationReport(
        ok=ok,
        checks=checks,
        path=[c.cert for c in path.certificates],
        cross_checked=ran,
        verifier_error=verifier_error,
        paths_tried=tried,
    )


def _load_all(data: object, what: str) -> tuple[list[x509.Certificate], str | None]:
    """Every certificate in ``data`` (PEM blocks or one DER), or a reason why none."""
    from kmsportal.crypto.x509 import load_certificates

    if data is None:
        return [], None
    if not isinstance(data, bytes | bytearray | memoryview):
        return [], f"the {what} is not bytes ({type(data).__name__})"
    raw = bytes(data)
    if len(raw) > MAX_INPUT_BYTES:
        return [], f"the {what} is {len(raw):,} bytes; at most {MAX_INPUT_BYTES:,} are read"
    try:
        return load_certificates(raw), None
    except Exception as exc:
        return [], f"the {what} cannot be read: {_describe_error(exc)}"


def _lenient_leaf(raw: bytes) -> x509.Certificate | None:
    """A certificate whose extensions cannot be parsed (duplicates, bad values) still loads
    in cryptography; the checks then report exactly what is wrong with it."""
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except Exception:
        return None


def validate_certificate_data(
    *,
    certificate: bytes,
    chain: bytes | None = None,
    trust_roots: Sequence[x509.Certificate],
    extra_intermediates: Sequence[x509.Certificate] = (),
    purpose: Purpose = "any",
    hostname: str | None = None,
    now: dt.datetime | None = None,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None = None,
    revocation_required: bool = False,
) -> tuple[ValidationReport, x509.Certificate | None]:
    """Validate raw bytes (PEM or DER): (report, the leaf if it could be read).

    Bytes that are not a certificate give a report whose ``decoding`` check failed with the
    reason; a chain that cannot be read is reported the same way. Never raises.
    """
    try:
        leaves, problem = _load_all(certificate, "certificate")
        if not leaves:
            raw = bytes(certificate) if isinstance(certificate, bytes | bytearray) else b""
            leaf = _lenient_leaf(raw) if raw and len(raw) <= MAX_INPUT_BYTES else None
            if leaf is None:
                return _report_error(problem or "the certificate is empty"), None
        else:
            leaf = leaves[0]
        supplied, chain_problem = _load_all(chain if chain and bytes(chain).strip() else None,
                                            "chain")  # fmt: skip
        report = validate_certificate(
            leaf=leaf,
            intermediates=[*leaves[1:], *supplied, *extra_intermediates],
            trust_roots=trust_roots,
            purpose=purpose,
            hostname=hostname,
            now=now,
            is_revoked=is_revoked,
            revocation_required=revocation_required,
        )
        if chain_problem:
            checks = [
                Check("decoding", False, chain_problem) if c.name == "decoding" else c
                for c in report.checks
            ]
            report = ValidationReport(
                ok=False,
                checks=checks,
                path=report.path,
                cross_checked=report.cross_checked,
                verifier_error=report.verifier_error,
                paths_tried=report.paths_tried,
            )
        return report, leaf
    except Exception as exc:
        return _report_error(f"the validation could not be completed: {_describe_error(exc)}"), None
