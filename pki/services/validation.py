"""Validation of a pasted or uploaded certificate against this PKI's roots."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from kmsportal.actors import Actor
from kmsportal.crypto.validation import (
    RevocationStatus,
    ValidationReport,
    validate_certificate_data,
)
from kmsportal.crypto.x509 import (
    CertificateSummary,
    certificate_to_der,
    describe_certificate,
    format_name,
)

from ..errors import PkiError
from ..models import (
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
)
from .records import (
    PURPOSES,
    _fingerprint,
)


@dataclass(frozen=True)
class PathEntry:
    subject: str
    ca_name: str | None  # the name of our CA with this certificate, if it is one


@dataclass(frozen=True)
class ValidationOutcome:
    """A validation report with what the pages show around it."""

    report: ValidationReport
    leaf: CertificateSummary | None  # None when the input could not be read or described
    issued_here: Certificate | None
    path: list[PathEntry]
    purpose: str
    hostname: str | None


def _database_status(certificate: x509.Certificate) -> RevocationStatus | None:
    """What our database says about a certificate one of our CAs issued (None: not ours)."""
    fingerprint = _fingerprint(certificate_to_der(certificate))
    row = (
        Certificate.objects.filter(fingerprint_sha256=fingerprint)
        .only("status", "revocation_reason", "revoked_at")
        .first()
    )
    if row is not None:
        if row.status != CertificateStatus.REVOKED:
            return RevocationStatus("good")
        try:
            reason = x509.ReasonFlags(row.revocation_reason) if row.revocation_reason else None
        except ValueError:
            reason = None
        return RevocationStatus("revoked", reason=reason, revoked_at=row.revoked_at)
    ca = CertificateAuthority.objects.filter(fingerprint_sha256=fingerprint).only("state").first()
    if ca is not None:
        if ca.state == CAState.REVOKED:
            return RevocationStatus("revoked", revoked_at=ca.revoked_at)
        return RevocationStatus("good")
    return None


def certificate_validate(
    *,
    actor: Actor,
    pem_data: bytes,
    chain_pem: bytes | None = None,
    purpose: str = "any",
    hostname: str | None = None,
) -> ValidationOutcome:
    """Validate a certificate (PEM or DER) for ``purpose`` ("server", "client", "any") and
    optionally ``hostname``, against the roots of this PKI.

    Every check is reported (decoding, path to one of our roots, signatures, validity, basic
    constraints, name constraints, critical extensions, algorithms, key usage and EKU,
    hostname, revocation status from our database). Our own intermediates are available to
    the path builder, so a chain is optional. Any bytes give a report: input that is not a
    certificate fails the decoding check. Changes nothing and is not audited; ``actor``
    must be allowed to read certificates.
    """
    if actor is not None and not actor.has_perm("pki.view_certificate"):
        raise PkiError("validating certificates needs the pki.view_certificate permission")
    if purpose not in PURPOSES:
        raise PkiError(f"unknown purpose {purpose!r}; choose server, client or any")
    roots: list[x509.Certificate] = []
    ours: list[x509.Certificate] = []
    names: dict[str, str] = {}
    for name, parent_id, der, state in CertificateAuthority.objects.values_list(
        "name", "parent_id", "certificate_der", "state"
    ):
        certificate = x509.load_der_x509_certificate(bytes(der))
        names[_fingerprint(bytes(der))] = name
        if parent_id is None:
            # A revoked root is no longer a trust anchor.
            if state != CAState.REVOKED:
                roots.append(certificate)
        else:
            ours.append(certificate)
    host = (hostname or "").strip() or None
    report, leaf = validate_certificate_data(
        certificate=pem_data,
        chain=chain_pem,
        trust_roots=roots,
        extra_intermediates=ours,
        purpose=purpose,  # type: ignore[arg-type]
        hostname=host,
        is_revoked=_database_status,
    )
    path = [
        PathEntry(
            subject=format_name(c.subject) or "(empty subject)",
            ca_name=names.get(_fingerprint(certificate_to_der(c))),
        )
        for c in report.path
    ]
    if leaf is None:
        return ValidationOutcome(
            report=report, leaf=None, issued_here=None, path=path, purpose=purpose, hostname=host
        )
    issued_here = (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .filter(fingerprint_sha256=_fingerprint(certificate_to_der(leaf)))
        .first()
    )
    try:
        summary = describe_certificate(leaf)
    except Exception:  # a certificate too malformed to describe is still reported on
        summary = None
    return ValidationOutcome(
        report=report,
        leaf=summary,
        issued_here=issued_here,
        path=path,
        purpose=purpose,
        hostname=host,
    )
