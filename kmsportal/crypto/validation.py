"""Certificate path validation that says exactly which check failed.

:func:`validate_certificate` builds the path from a leaf to a trust root itself (issuer name
match plus signature verification) and reports one :class:`Check` per aspect, in a fixed
order: path, signatures, validity period, basic constraints, key usage and EKU, hostname,
revocation. For the ``server`` and ``client`` purposes the decision is cross-checked with
``cryptography.x509.verification`` (a strict RFC 5280 / CA/B Forum profile); when that
verifier rejects the chain, its message is put into the detail of the check it concerns, so
a chain is never reported as good when the library verifier says otherwise. (It cannot
judge every case; see ``_run_verifier``. ``ValidationReport.cross_checked`` says if it ran.)

Simplifications (documented rather than hidden): name constraints and certificate policies
are left to the library verifier; trust roots are trust anchors whose own signature and
revocation status are not checked (RFC 5280 section 6.1.1 (d)); host names are matched only
against SANs, never the CN (RFC 6125 section 6.4.4, CAB BR).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmsportal.crypto.x509 import extended_key_usage_name, format_name, format_san

__all__ = [
    "CHECK_NAMES",
    "MAX_PATH_LENGTH",
    "Check",
    "Purpose",
    "RevocationStatus",
    "ValidationReport",
    "validate_certificate",
]

Purpose = Literal["server", "client", "any"]

#: The checks of a report, always in this order.
CHECK_NAMES: tuple[str, ...] = (
    "path",
    "signatures",
    "validity period",
    "basic constraints",
    "key usage and EKU",
    "hostname",
    "revocation",
)

#: Longest chain (leaf and root included) that the path builder follows.
MAX_PATH_LENGTH = 10


@dataclass(frozen=True)
class RevocationStatus:
    """What a revocation source (CRL, OCSP, the CA database) says about one certificate."""

    status: Literal["good", "revoked", "unknown"]
    reason: x509.ReasonFlags | None = None
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True)
class Check:
    """One aspect of a validation; ``passed`` is None when it did not apply or was skipped."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    """The outcome: ``ok`` is true when no check failed and a path to a trust root exists.

    ``path`` is the chain that was built, leaf first (incomplete when the path check failed).
    ``cross_checked`` tells whether ``cryptography``'s verifier ran; ``verifier_error`` is its
    message when it rejected the chain.
    """

    ok: bool
    checks: list[Check]
    path: list[x509.Certificate] = field(default_factory=list)
    cross_checked: bool = False
    verifier_error: str | None = None

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


# --- helpers ---------------------------------------------------------------------------------


def _label(cert: x509.Certificate) -> str:
    name = format_name(cert.subject)
    return f"'{name}'" if name else f"the certificate with serial {cert.serial_number:X}"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


# --- path building ---------------------------------------------------------------------------


@dataclass
class _Path:
    certificates: list[x509.Certificate]
    complete: bool
    problem: str = ""

    @property
    def issuers(self) -> list[x509.Certificate]:
        """Every certificate that signs another one in the path (intermediates and root)."""
        return self.certificates[1:]

    @property
    def below_anchor(self) -> list[x509.Certificate]:
        """Certificates whose status matters: all but the trust anchor of a complete path."""
        return self.certificates[:-1] if self.complete else list(self.certificates)


def _build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
) -> _Path:
    """Follow issuer names from the leaf to a trust root, preferring issuers whose key verifies
    the signature (so that a re-keyed CA with the same name is told apart)."""
    path = [leaf]
    current = leaf
    while len(path) <= MAX_PATH_LENGTH:
        if current in trust_roots:
            return _Path(path, complete=True)
        candidates = [r for r in trust_roots if r.subject == current.issuer]
        candidates += [c for c in intermediates if c.subject == current.issuer and c not in path]
        if not candidates:
            if _is_self_issued(current):
                problem = f"{_label(current)} is self-signed but is not one of the trust roots"
            else:
                problem = (
                    f"the issuer '{format_name(current.issuer)}' of {_label(current)} was not "
                    "found among the intermediates or the trust roots"
                )
            return _Path(path, complete=False, problem=problem)
        chosen = next((c for c in candidates if _signed_by(current, c)), candidates[0])
        path.append(chosen)
        if chosen in trust_roots:
            return _Path(path, complete=True)
        current = chosen
    return _Path(
        path,
        complete=False,
        problem=f"no trust root was reached within {MAX_PATH_LENGTH} certificates",
    )


# --- the individual checks -------------------------------------------------------------------


def _check_path(path: _Path) -> Check:
    if not path.complete:
        return Check("path", False, path.problem)
    names = " → ".join(format_name(c.subject) or "(empty subject)" for c in path.certificates)
    return Check("path", True, f"{names} (trust root)")


def _check_signatures(path: _Path) -> Check:
    links = list(zip(path.certificates, path.issuers, strict=False))
    if not links:
        if path.complete:
            return Check("signatures", None, "the certificate is itself a trust root")
        return Check("signatures", None, "not checked: no issuer certificate was found")
    for cert, issuer in links:
        if not _signed_by(cert, issuer):
            return Check(
                "signatures",
                False,
                f"the signature of {_label(cert)} does not verify with the key of {_label(issuer)}",
            )
    count = len(links)
    detail = f"{count} signature{'s' if count != 1 else ''} verified"
    if not path.complete:
        return Check("signatures", True, detail + " (up to where the path breaks off)")
    return Check("signatures", True, detail)


def _check_validity(path: _Path, now: dt.datetime) -> Check:
    problems: list[str] = []
    for cert in path.certificates:
        if now < cert.not_valid_before_utc:
            problems.append(
                f"{_label(cert)} is not yet valid (valid from {_time(cert.not_valid_before_utc)})"
            )
        elif now > cert.not_valid_after_utc:
            problems.append(f"{_label(cert)} expired on {_time(cert.not_valid_after_utc)}")
    if problems:
        return Check("validity period", False, "; ".join(problems))
    count = len(path.certificates)
    return Check(
        "validity period",
        True,
        f"{'all ' if count > 1 else ''}{count} certificate{'s are' if count > 1 else ' is'} "
        f"valid on {_time(now)}",
    )


def _check_basic_constraints(path: _Path, leaf: x509.Certificate, purpose: Purpose) -> Check:
    problems: list[str] = []
    for index, issuer in enumerate(path.issuers, start=1):
        constraints = _extension(issuer, x509.BasicConstraints)
        if not (isinstance(constraints, x509.BasicConstraints) and constraints.ca):
            problems.append(
                f"{_label(issuer)} issues certificates but is not a CA certificate "
                "(basicConstraints CA:TRUE is missing)"
            )
            continue
        # RFC 5280 4.2.1.9: pathLenConstraint counts the non-self-issued intermediate CA
        # certificates that may follow this one in the path.
        below = sum(1 for c in path.certificates[1:index] if not _is_self_issued(c))
        if constraints.path_length is not None and below > constraints.path_length:
            problems.append(
                f"{_label(issuer)} allows {constraints.path_length} intermediate CA(s) below "
                f"it (path length), but the chain has {below}"
            )
    leaf_constraints = _extension(leaf, x509.BasicConstraints)
    leaf_is_ca = isinstance(leaf_constraints, x509.BasicConstraints) and leaf_constraints.ca
    if purpose != "any" and leaf_is_ca and len(path.certificates) > 1:
        problems.append(
            f"the leaf {_label(leaf)} is a CA certificate; a {purpose} certificate must not be a CA"
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


_PURPOSE_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _check_usage(path: _Path, leaf: x509.Certificate, purpose: Purpose) -> Check:
    problems: list[str] = []
    wanted = _PURPOSE_EKU.get(purpose)
    for issuer in path.issuers:
        usage = _extension(issuer, x509.KeyUsage)
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            problems.append(f"{_label(issuer)} may not sign certificates (no keyCertSign)")
        # An EKU in a CA certificate constrains what it may issue (common practice, and
        # enforced by cryptography's and browsers' verifiers).
        ca_eku = _extension(issuer, x509.ExtendedKeyUsage)
        if (
            wanted is not None
            and isinstance(ca_eku, x509.ExtendedKeyUsage)
            and wanted not in ca_eku
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ca_eku
        ):
            problems.append(
                f"{_label(issuer)} is restricted to "
                f"{', '.join(extended_key_usage_name(o) for o in ca_eku)} and may not issue "
                f"{extended_key_usage_name(wanted)} certificates"
            )
    if wanted is not None:
        eku = _extension(leaf, x509.ExtendedKeyUsage)
        # RFC 5280 4.2.1.12: without the extension the key is not restricted by EKU.
        if isinstance(eku, x509.ExtendedKeyUsage) and wanted not in eku:
            present = ", ".join(extended_key_usage_name(o) for o in eku) or "nothing"
            problems.append(
                f"the leaf's extended key usage ({present}) does not include "
                f"{extended_key_usage_name(wanted)}, needed for a TLS {purpose}"
            )
        usage = _extension(leaf, x509.KeyUsage)
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


def _normalize_host(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """An IP address, or a lower-case A-label DNS name; ValueError if neither."""
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
    except UnicodeError:
        raise ValueError(hostname) from None
    if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?", host) or ".." in host:
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


def _check_hostname(leaf: x509.Certificate, hostname: str | None) -> Check:
    if hostname is None:
        return Check("hostname", None, "no host name was given")
    try:
        host = _normalize_host(hostname)
    except ValueError:
        return Check("hostname", False, f"{hostname!r} is not a valid host name or IP address")
    san = _extension(leaf, x509.SubjectAlternativeName)
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


def _describe_status(cert: x509.Certificate, status: RevocationStatus) -> str:
    if status.status != "revoked":
        return f"{_label(cert)}: {status.status}"
    parts = [f"{_label(cert)} was revoked"]
    if status.revoked_at is not None:
        parts.append(f"on {_time(status.revoked_at)}")
    if status.reason is not None:
        parts.append(f"(reason: {status.reason.value})")
    return " ".join(parts)


def _check_revocation(
    path: _Path, is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None
) -> Check:
    if is_revoked is None:
        return Check("revocation", None, "not checked: no revocation source was given")
    statuses = [
        (cert, is_revoked(cert) or RevocationStatus("unknown")) for cert in path.below_anchor
    ]
    revoked = [_describe_status(c, s) for c, s in statuses if s.status == "revoked"]
    if revoked:
        return Check("revocation", False, "; ".join(revoked))
    described = "; ".join(_describe_status(c, s) for c, s in statuses)
    if any(s.status == "unknown" for _, s in statuses):
        # Soft-fail, as TLS clients do: an unknown status is reported but is not a failure.
        return Check("revocation", None, f"status not known for every certificate: {described}")
    return Check("revocation", True, described)


# --- the library verifier --------------------------------------------------------------------

# Which check a message of cryptography's verifier concerns; the first matching topic wins.
_VERIFIER_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostname", ("subjectaltname", "subject alternative name", "hostname", "2.5.29.17")),
    ("validity period", ("validity", "valid at", "expired", "not yet valid")),
    ("key usage and EKU", ("eku", "keyusage", "key usage", "extendedkeyusage")),
    ("basic constraints", ("basicconstraints", "basic constraints", "path length", "pathlen")),
    ("signatures", ("signature",)),
)
_CERT_REPR = re.compile(r"<Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>")


def _clean_verifier_message(message: str) -> str:
    message = message.removeprefix("validation failed: ")
    return _CERT_REPR.sub(lambda m: f"'{m.group(1)}'", message)


def _verifier_subject(
    leaf: x509.Certificate, hostname: str | None
) -> verification.DNSName | verification.IPAddress | None:
    """The name the server verifier checks: ``hostname`` if valid, else the leaf's first
    DNS or IP SAN (so that the rest of the chain is still cross-checked)."""
    if hostname is not None:
        try:
            host = _normalize_host(hostname)
            if isinstance(host, str):
                return verification.DNSName(host)
            return verification.IPAddress(host)
        except ValueError:
            pass
    san = _extension(leaf, x509.SubjectAlternativeName)
    for name in san if isinstance(san, x509.SubjectAlternativeName) else ():
        try:
            if isinstance(name, x509.DNSName) and not name.value.startswith("*."):
                return verification.DNSName(name.value)
            if isinstance(name, x509.IPAddress):
                return verification.IPAddress(name.value)
        except ValueError:
            continue
    return None


def _verifier_applies(
    leaf: x509.Certificate,
    trust_roots: Sequence[x509.Certificate],
    purpose: Purpose,
    hostname: str | None,
) -> bool:
    """Whether cryptography's verifier can judge this case (see :func:`_run_verifier`)."""
    if purpose == "any" or not trust_roots:
        return False
    if purpose == "server":
        return _verifier_subject(leaf, hostname) is not None
    return isinstance(_extension(leaf, x509.SubjectAlternativeName), x509.SubjectAlternativeName)


def _run_verifier(
    *,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    purpose: Purpose,
    hostname: str | None,
    now: dt.datetime,
) -> str | None:
    """The library verifier's rejection message, or None if it accepted (or did not run).

    It does not run for ``any`` (it only knows TLS server and client), without trust roots,
    for a server certificate without a DNS/IP name to check, or for a client certificate
    without SANs: cryptography's client policy requires a SAN, RFC 5280 does not (a subject
    name suffices), and the tls-client and kms-client profiles allow SAN-less certificates.
    """
    if not _verifier_applies(leaf, trust_roots, purpose, hostname):
        return None
    builder = verification.PolicyBuilder().store(verification.Store(list(trust_roots))).time(now)
    try:
        if purpose == "server":
            subject = _verifier_subject(leaf, hostname)
            if subject is None:  # excluded by _verifier_applies; keeps the type checker happy
                return None
            builder.build_server_verifier(subject).verify(leaf, list(intermediates))
        else:
            builder.build_client_verifier().verify(leaf, list(intermediates))
    except verification.VerificationError as exc:
        return _clean_verifier_message(str(exc))
    return None


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


# --- entry point -----------------------------------------------------------------------------


def validate_certificate(
    *,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    purpose: Purpose,
    hostname: str | None,
    now: dt.datetime | None = None,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None = None,
) -> ValidationReport:
    """Validate ``leaf`` for ``purpose`` against ``trust_roots`` and report every check.

    ``intermediates`` may be in any order and contain unrelated certificates. ``hostname``
    (a DNS name or IP address) is matched against the leaf's SANs when given. ``now`` is the
    validation time (aware; default: the current time). ``is_revoked`` is called for every
    certificate of the path except the trust root; returning None means "unknown". An
    unknown status leaves the revocation check undecided (None) rather than failed.

    The report's ``ok`` is true when the path check passed and no check failed.
    """
    if purpose not in ("server", "client", "any"):
        raise ValueError(f"unknown purpose {purpose!r}; use 'server', 'client' or 'any'")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")

    path = _build_path(leaf, intermediates, trust_roots)
    checks = [
        _check_path(path),
        _check_signatures(path),
        _check_validity(path, now),
        _check_basic_constraints(path, leaf, purpose),
        _check_usage(path, leaf, purpose),
        _check_hostname(leaf, hostname),
        _check_revocation(path, is_revoked),
    ]
    verifier_error = _run_verifier(
        leaf=leaf,
        intermediates=intermediates,
        trust_roots=trust_roots,
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
        path=list(path.certificates),
        cross_checked=_verifier_applies(leaf, trust_roots, purpose, hostname),
        verifier_error=verifier_error,
    )
