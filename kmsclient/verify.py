"""Certificate validation for relying parties: ``python -m kmsclient verify-cert``.

The same checks as the portal's validation page (``kmsportal.crypto.validation``), against
trust roots the relying party obtained itself (``--ca-cert``), without the portal and without
Django. Revocation is checked by default for every certificate of the path below the trust
root: the certificate's CRL distribution point (the complete CRL, checked as RFC 5280 §6.3.3
asks, plus the delta CRL it points to), else its AIA OCSP responder. ``--crl FILE`` uses CRL
files instead, ``--ocsp`` asks the OCSP responders only, ``--offline`` checks no revocation
and says so (exit status 3, never 0).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from kmsclient.crl import CRLInputError, CRLInvalid, download_crl
from kmsportal.crypto.crl import (
    CRLValidation,
    crl_revocation_status,
    load_crl,
    validate_crl,
)
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.validation import (
    Purpose,
    RevocationStatus,
    ValidationReport,
    validate_certificate_data,
)
from kmsportal.crypto.x509 import X509Error, format_name, load_certificates

__all__ = [
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_REVOCATION_UNCHECKED",
    "CertificateInputError",
    "RevocationMode",
    "VerifyResult",
    "verify_certificate_files",
]

#: Exit statuses of ``verify-cert``.
EXIT_OK = 0  # every check passed, revocation included
EXIT_FAILED = 1  # a check failed (revoked, expired, not a certificate, ...)
EXIT_INPUT = 2  # a trust root or chain file cannot be read, or a usage error
EXIT_REVOCATION_UNCHECKED = 3  # every other check passed; revocation not established

RevocationMode = Literal["auto", "crl-files", "ocsp", "offline"]
DEFAULT_TIMEOUT = 15.0
MAX_OCSP_BYTES = 64 * 1024


class CertificateInputError(KMSError):
    """A trust root or chain file is missing, unreadable, or not certificates: exit 2."""

    code = "certificate_input_unusable"


@dataclass(frozen=True)
class VerifyResult:
    report: ValidationReport
    subject: str
    revocation_mode: str = "auto"

    @property
    def exit_status(self) -> int:
        if not self.report.ok:
            return EXIT_FAILED
        if self.report.check("revocation").passed is not True:
            return EXIT_REVOCATION_UNCHECKED
        return EXIT_OK


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_many(path: str, what: str) -> list[x509.Certificate]:
    try:
        return load_certificates(_read(path, what))
    except X509Error as exc:
        raise CertificateInputError(f"{what} {path}: {exc}") from None


def _uris(names: Sequence[x509.GeneralName] | None) -> list[str]:
    return [
        n.value
        for n in names or ()
        if isinstance(n, x509.UniformResourceIdentifier)
        and n.value.startswith(("http://", "https://"))
    ]


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> object:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except Exception:
        return None


@dataclass
class _Revocation:
    """Answers ``is_revoked`` for the validator from CRLs (downloaded or files) and OCSP."""

    mode: RevocationMode
    pool: list[x509.Certificate]
    now: dt.datetime
    timeout: float = DEFAULT_TIMEOUT
    crl_files: list[x509.CertificateRevocationList] = field(default_factory=list)
    _downloads: dict[str, bytes | str] = field(default_factory=dict)

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        for candidate in self.pool:
            try:
                if candidate.subject == cert.issuer:
                    cert.verify_directly_issued_by(candidate)
                    return candidate
            except Exception:  # noqa: S112 - not this one; try the next candidate
                continue
        return None

    def __call__(self, cert: x509.Certificate) -> RevocationStatus:
        issuer = self.issuer_of(cert)
        if issuer is None:
            return RevocationStatus("unknown", source="its issuer certificate is not known")
        reasons: list[str] = []
        if self.mode == "crl-files":
            return self._from_crl_files(cert, issuer)
        order = ("ocsp",) if self.mode == "ocsp" else ("crl", "ocsp")
        for method in order:
            status = self._from_crl(cert, issuer) if method == "crl" else self._ocsp(cert, issuer)
            if status.status != "unknown":
                return status
            reasons.append(status.source)
        return RevocationStatus("unknown", source="; ".join(r for r in reasons if r))

    # -- CRLs ------------------------------------------------------------------------------

    def _download(self, url: str) -> bytes:
        if url not in self._downloads:
            try:
                self._downloads[url] = download_crl(url, timeout=self.timeout)
            except (CRLInputError, CRLInvalid) as exc:
                self._downloads[url] = str(exc)
        data = self._downloads[url]
        if isinstance(data, str):
            raise CRLInvalid(data)
        return data

    def _status(
        self,
        cert: x509.Certificate,
        complete: CRLValidation,
        delta: CRLValidation | None,
        label: str,
    ) -> RevocationStatus:
        info = crl_revocation_status(cert.serial_number, complete, delta)
        if info is None:
            return RevocationStatus("good", source=label)
        return RevocationStatus(
            "revoked", reason=info.reason.flag, revoked_at=info.revocation_date, source=label
        )

    def _from_crl(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        points = _extension(cert, x509.CRLDistributionPoints)
        urls = [u for p in points or () for u in _uris(p.full_name)]  # type: ignore[attr-defined]
        if not urls:
            return RevocationStatus("unknown", source="no CRL distribution point")
        problems: list[str] = []
        for url in urls:
            try:
                complete = validate_crl(
                    self._download(url), issuer_certificate=issuer, now=self.now, certificate=cert
                )
            except CRLInvalid as exc:
                problems.append(str(exc))
                continue
            if not complete.ok or complete.summary is None:
                problems.append(f"CRL {url}: " + "; ".join(complete.problems))
                continue
            label = f"CRL #{complete.summary.crl_number} from {url}"
            delta, delta_problem = self._delta(cert, issuer, complete)
            if delta_problem:
                problems.append(delta_problem)
                continue
            if delta is not None and delta.summary is not None:
                label += f" and delta CRL #{delta.summary.crl_number}"
            return self._status(cert, complete, delta, label)
        return RevocationStatus("unknown", source="; ".join(problems))

    def _delta(
        self, cert: x509.Certificate, issuer: x509.Certificate, complete: CRLValidation
    ) -> tuple[CRLValidation | None, str]:
        urls = list(complete.summary.freshest_crl_urls if complete.summary else ())
        freshest = _extension(cert, x509.FreshestCRL)
        urls += [u for p in freshest or () for u in _uris(p.full_name)]  # type: ignore[attr-defined]
        for url in dict.fromkeys(urls):
            try:
                delta = validate_crl(
                    self._download(url),
                    issuer_certificate=issuer,
                    now=self.now,
                    certificate=cert,
                    base=complete,
                )
            except CRLInvalid as exc:
                return None, f"delta CRL: {exc}"
            if not delta.ok:
                return None, f"delta CRL {url}: " + "; ".join(delta.problems)
            return delta, ""
        return None, ""

    def _from_crl_files(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        completes: list[x509.CertificateRevocationList] = []
        deltas: list[x509.CertificateRevocationList] = []
        problems: list[str] = []
        for crl in self.crl_files:
            try:
                if crl.issuer != cert.issuer:
                    continue
                is_delta = any(
                    e.oid == x509.oid.ExtensionOID.DELTA_CRL_INDICATOR for e in crl.extensions
                )
            except Exception as exc:
                problems.append(f"a --crl file cannot be read: {exc}")
                continue
            (deltas if is_delta else completes).append(crl)
        for crl in completes:
            complete = validate_crl(crl, issuer_certificate=issuer, now=self.now, certificate=cert)
            if not complete.ok or complete.summary is None:
                problems.append("; ".join(complete.problems))
                continue
            delta = None
            for candidate in deltas:
                checked = validate_crl(
                    candidate,
                    issuer_certificate=issuer,
                    now=self.now,
                    certificate=cert,
                    base=complete,
                )
                if checked.ok:
                    delta = checked
                    break
                problems.append("delta CRL: " + "; ".join(checked.problems))
            label = f"CRL #{complete.summary.crl_number} (--crl file)"
            if delta is not None and delta.summary is not None:
                label += f" and delta CRL #{delta.summary.crl_number}"
            return self._status(cert, complete, delta, label)
        if not problems:
            problems.append(f"no --crl file is a CRL of {format_name(cert.issuer)}")
        return RevocationStatus("unknown", source="; ".join(problems))

    # -- OCSP ------------------------------------------------------------------------------

    def _ocsp(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        access = _extension(cert, x509.AuthorityInformationAccess)
        urls = [
            d.access_location.value
            for d in access or ()  # type: ignore[attr-defined]
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
        if not urls:
            return RevocationStatus("unknown", source="no OCSP responder")
        problems = []
        for url in urls:
            try:
                return self._ask_ocsp(url, cert, issuer)
            except Exception as exc:  # every failure is a reason, not a crash
                problems.append(f"OCSP {url}: {exc}")
        return RevocationStatus("unknown", source="; ".join(problems))

    def _ask_ocsp(
        self, url: str, cert: x509.Certificate, issuer: x509.Certificate
    ) -> RevocationStatus:
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        try:
            answer = requests.post(
                url,
                data=request,
                headers={"Content-Type": "application/ocsp-request"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ValueError(f"unreachable ({type(exc).__name__})") from None
        if answer.status_code != 200 or len(answer.content) > MAX_OCSP_BYTES:
            raise ValueError(f"answered HTTP {answer.status_code}")
        response = ocsp.load_der_ocsp_response(answer.content)
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"answered {response.response_status.name}")
        signer = self._ocsp_signer(response, issuer)
        if signer is None:
            raise ValueError("the response is not signed by the CA or a responder it authorised")
        single = next(iter(response.responses))
        if single.serial_number != cert.serial_number:
            raise ValueError("the response is about another certificate")
        skew = dt.timedelta(minutes=5)
        if single.this_update_utc > self.now + skew:
            raise ValueError("the response's this update is in the future")
        if single.next_update_utc is not None and single.next_update_utc < self.now - skew:
            raise ValueError("the response is stale")
        label = f"OCSP {url}"
        if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
            return RevocationStatus("good", source=label)
        if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            return RevocationStatus(
                "revoked",
                reason=single.revocation_reason,
                revoked_at=single.revocation_time_utc,
                source=label,
            )
        raise ValueError("the responder does not know the certificate")

    def _ocsp_signer(
        self, response: ocsp.OCSPResponse, issuer: x509.Certificate
    ) -> x509.Certificate | None:
        candidates = [issuer, *response.certificates]
        for candidate in candidates:
            try:
                if candidate is not issuer:
                    candidate.verify_directly_issued_by(issuer)
                    eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                        continue
                key = candidate.public_key()
                hash_algorithm = response.signature_hash_algorithm
                from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

                if isinstance(key, rsa.RSAPublicKey):
                    key.verify(
                        response.signature,
                        response.tbs_response_bytes,
                        padding.PKCS1v15(),
                        hash_algorithm,  # type: ignore[arg-type]
                    )
                elif isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(
                        response.signature,
                        response.tbs_response_bytes,
                        ec.ECDSA(hash_algorithm),  # type: ignore[arg-type]
                    )
                else:
                    continue
                return candidate
            except Exception:  # noqa: S112 - not a valid signer; try the next
                continue
        return None


def _load_crl_files(paths: Sequence[str]) -> list[x509.CertificateRevocationList]:
    crls = []
    for path in paths:
        data = _read(path, "CRL file")
        try:
            crls.append(load_crl(data))
        except Exception as exc:
            raise CertificateInputError(f"CRL file {path}: {exc}") from None
    return crls


def verify_certificate_files(
    *,
    certificate: str,
    ca_certificates: list[str],
    chain: str | None = None,
    hostname: str | None = None,
    purpose: Purpose = "any",
    revocation: RevocationMode = "auto",
    crl_files: Sequence[str] = (),
    now: dt.datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    is_revoked: Callable[[x509.Certificate], RevocationStatus | None] | None = None,
) -> VerifyResult:
    """Validate the certificate in file ``certificate`` against the trust roots in the
    ``ca_certificates`` files (each PEM, possibly several, or one DER), with optional
    intermediates in ``chain``, checking revocation as ``revocation`` says.

    Raises :class:`CertificateInputError` only for unreadable trust root, chain or CRL
    files; any content of ``certificate`` gives a report (a failed decoding check)."""
    data = _read(certificate, "certificate")
    roots = [c for path in ca_certificates for c in _load_many(path, "CA certificate file")]
    intermediates = _load_many(chain, "chain file") if chain else []
    moment = now or dt.datetime.now(dt.UTC)
    checker = is_revoked
    if checker is None and revocation != "offline":
        checker = _Revocation(
            mode=revocation,
            pool=[*intermediates, *roots],
            now=moment,
            timeout=timeout,
            crl_files=_load_crl_files(crl_files) if revocation == "crl-files" else [],
        )
    report, leaf = validate_certificate_data(
        certificate=data,
        trust_roots=roots,
        extra_intermediates=intermediates,
        purpose=purpose,
        hostname=hostname or None,
        now=moment,
        is_revoked=checker,
    )
    if revocation == "offline":
        report = _offline(report)
    subject = "(not a certificate)"
    if leaf is not None:
        try:
            subject = leaf.subject.rfc4514_string() or "(no subject)"
        except Exception:
            subject = "(unreadable subject)"
    return VerifyResult(report=report, subject=subject, revocation_mode=revocation)


def _offline(report: ValidationReport) -> ValidationReport:
    from kmsportal.crypto.validation import Check

    checks = [
        Check(
            "revocation",
            None,
            "NOT CHECKED (--offline): the certificate may have been revoked; this answer "
            "does not say",
        )
        if c.name == "revocation"
        else c
        for c in report.checks
    ]
    return ValidationReport(
        ok=report.ok,
        checks=checks,
        path=report.path,
        cross_checked=report.cross_checked,
        verifier_error=report.verifier_error,
        paths_tried=report.paths_tried,
    )
