"""The path checks: signatures, validity, basic constraints, critical extensions, algorithms,
usage and revocation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from kmsportal.crypto.validation.paths import (
    CandidatePath,
    ParsedCertificate,
    describe_error,
    time_text,
)
from kmsportal.crypto.validation.report import Check, RevocationStatus
from kmsportal.crypto.x509 import extended_key_usage_name

# --- the individual checks -------------------------------------------------------------------


def check_signatures(
    path: CandidatePath, signed_by: Callable[[ParsedCertificate, ParsedCertificate], bool]
) -> Check:
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


def check_validity(path: CandidatePath, now: dt.datetime) -> Check:
    problems: list[str] = []
    for cert in path.certificates:
        start, end = cert.time("not_valid_before_utc"), cert.time("not_valid_after_utc")
        if start is None or end is None:
            problems.append(f"the validity period of {cert.label} cannot be read")
        elif now < start:
            problems.append(f"{cert.label} is not yet valid (valid from {time_text(start)})")
        elif now > end:
            problems.append(f"{cert.label} expired on {time_text(end)}")
    if problems:
        return Check("validity period", False, "; ".join(problems))
    count = len(path.certificates)
    return Check(
        "validity period",
        True,
        f"{'all ' if count > 1 else ''}{count} certificate{'s are' if count > 1 else ' is'} "
        f"valid on {time_text(now)}",
    )


def check_basic_constraints(path: CandidatePath, leaf: ParsedCertificate, purpose: str) -> Check:
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


def check_critical_extensions(path: CandidatePath) -> Check:
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


def _key_problem(cert: ParsedCertificate) -> str | None:
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


def _signature_problem(cert: ParsedCertificate) -> str | None:
    try:
        oid = cert.cert.signature_algorithm_oid
        name = getattr(oid, "_name", None) or oid.dotted_string
    except Exception as exc:
        return f"the signature algorithm of {cert.label} cannot be read ({describe_error(exc)})"
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


def check_algorithms(path: CandidatePath) -> Check:
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

PURPOSE_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _eku_names(eku: x509.ExtendedKeyUsage) -> str:
    return ", ".join(extended_key_usage_name(o) for o in eku) or "nothing"


def check_usage(path: CandidatePath, leaf: ParsedCertificate, purpose: str) -> Check:
    problems: list[str] = []
    wanted = PURPOSE_EKU.get(purpose)
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


def _describe_status(cert: ParsedCertificate, status: RevocationStatus) -> str:
    source = f" ({status.source})" if status.source else ""
    if status.status != "revoked":
        return f"{cert.label}: {status.status}{source}"
    parts = [f"{cert.label} was revoked"]
    if status.revoked_at is not None:
        parts.append(f"on {time_text(status.revoked_at)}")
    if status.reason is not None:
        parts.append(f"(reason: {status.reason.value})")
    return " ".join(parts) + source


def _ask(
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None], cert: ParsedCertificate
) -> RevocationStatus:
    try:
        status = is_revoked(cert.cert)
    except Exception as exc:
        return RevocationStatus("unknown", source=f"the lookup failed: {describe_error(exc)}")
    if not isinstance(status, RevocationStatus):
        return RevocationStatus("unknown")
    return status


def check_revocation(
    path: CandidatePath,
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
