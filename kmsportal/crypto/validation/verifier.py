"""The second opinion: ``cryptography.x509.verification`` for server and client paths."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509 import verification

from kmsportal.crypto.validation.checks import PURPOSE_EKU
from kmsportal.crypto.validation.names import normalize_host
from kmsportal.crypto.validation.paths import ParsedCertificate
from kmsportal.crypto.validation.report import Check

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


def _verifier_subject(
    leaf: ParsedCertificate, hostname: object
) -> x509.DNSName | x509.IPAddress | None:
    """The name the server verifier checks: ``hostname`` if valid, else the leaf's first
    DNS or IP SAN (so that the rest of the chain is still cross-checked)."""
    if hostname is not None:
        try:
            host = normalize_host(hostname)
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


def run_verifier(
    *,
    leaf: ParsedCertificate,
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
    if purpose not in PURPOSE_EKU or not trust_roots:
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


def merge_verifier_error(checks: list[Check], message: str) -> list[Check]:
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
