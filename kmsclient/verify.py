"""Offline certificate validation for relying parties: ``python -m kmsclient verify-cert``.

The same checks as the portal's validation page (``kmsportal.crypto.validation``), against
trust roots the relying party obtained itself (``--ca-cert``), without the portal and without
Django. Revocation is not checked offline: the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from kmsportal.crypto.validation import Purpose, ValidationReport, validate_certificate
from kmsportal.crypto.x509 import X509Error, load_certificate, load_certificates

__all__ = ["CertificateInputError", "VerifyResult", "verify_certificate_files"]


class CertificateInputError(Exception):
    """A file is missing, unreadable, or not a certificate: exit status 2."""


@dataclass(frozen=True)
class VerifyResult:
    report: ValidationReport
    subject: str


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_one(path: str, what: str) -> x509.Certificate:
    try:
        return load_certificate(_read(path, what))
    except X509Error as exc:
        raise CertificateInputError(f"{what} {path}: {exc}") from None


def _load_many(path: str, what: str) -> list[x509.Certificate]:
    try:
        return load_certificates(_read(path, what))
    except X509Error as exc:
        raise CertificateInputError(f"{what} {path}: {exc}") from None


def verify_certificate_files(
    *,
    certificate: str,
    ca_certificates: list[str],
    chain: str | None = None,
    hostname: str | None = None,
    purpose: Purpose = "any",
) -> VerifyResult:
    """Validate the certificate in file ``certificate`` against the trust roots in the
    ``ca_certificates`` files (each PEM, possibly several, or one DER), with optional
    intermediates in ``chain``. Raises :class:`CertificateInputError` for unreadable input."""
    leaf = _load_one(certificate, "certificate")
    roots = [c for path in ca_certificates for c in _load_many(path, "CA certificate file")]
    intermediates = _load_many(chain, "chain file") if chain else []
    report = validate_certificate(
        leaf=leaf,
        intermediates=intermediates,
        trust_roots=roots,
        purpose=purpose,
        hostname=hostname or None,
    )
    return VerifyResult(report=report, subject=leaf.subject.rfc4514_string() or "(no subject)")
