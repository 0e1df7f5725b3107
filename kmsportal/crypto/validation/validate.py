"""The entry points: validate_certificate and validate_certificate_data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from cryptography import x509

from kmsportal.crypto.validation.checks import (
    check_algorithms,
    check_basic_constraints,
    check_critical_extensions,
    check_revocation,
    check_signatures,
    check_usage,
    check_validity,
)
from kmsportal.crypto.validation.names import check_hostname, check_name_constraints
from kmsportal.crypto.validation.paths import (
    CandidatePath,
    ParsedCertificate,
    PathBuilder,
    describe_error,
    path_names,
)
from kmsportal.crypto.validation.report import (
    CHECK_NAMES,
    MAX_INPUT_BYTES,
    MAX_PATHS_TRIED,
    PATH_CHECKS,
    PURPOSES,
    Check,
    Purpose,
    RevocationStatus,
    ValidationReport,
)
from kmsportal.crypto.validation.verifier import merge_verifier_error, run_verifier

# --- entry points ----------------------------------------------------------------------------


def _evaluate(
    path: CandidatePath,
    leaf: ParsedCertificate,
    purpose: str,
    now: dt.datetime,
    builder: PathBuilder,
) -> dict[str, Check]:
    evaluations = {
        "signatures": lambda: check_signatures(path, builder.signed_by),
        "validity period": lambda: check_validity(path, now),
        "basic constraints": lambda: check_basic_constraints(path, leaf, purpose),
        "name constraints": lambda: check_name_constraints(path),
        "critical extensions": lambda: check_critical_extensions(path),
        "algorithms": lambda: check_algorithms(path),
        "key usage and EKU": lambda: check_usage(path, leaf, purpose),
    }
    return {name: _guarded(name, run) for name, run in evaluations.items()}


def _guarded(name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # a malformed certificate no check anticipated
        return Check(name, False, f"could not be evaluated: {describe_error(exc)}")


def _failure_summary(checks: dict[str, Check]) -> str:
    failed = [c for c in checks.values() if c.passed is False]
    return "; ".join(f"{c.name}: {c.detail}" for c in failed)


def _choose_path(
    leaf: ParsedCertificate, builder: PathBuilder, purpose: str, now: dt.datetime
) -> tuple[CandidatePath, dict[str, Check], list[str]]:
    tried: list[str] = []
    first: tuple[CandidatePath, dict[str, Check]] | None = None
    for certificates in builder.paths():
        path = CandidatePath(certificates, complete=True)
        checks = _evaluate(path, leaf, purpose, now, builder)
        if all(c.passed is not False for c in checks.values()):
            return path, checks, tried
        tried.append(f"{path_names(certificates)}: {_failure_summary(checks)}")
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
        dead_end = CandidatePath(
            [leaf], False, "the path search stopped: too much work (bounded search)"
        )
    return dead_end, _evaluate(dead_end, leaf, purpose, now, builder), tried


def _path_check(path: CandidatePath, tried: list[str], builder: PathBuilder) -> Check:
    if not path.complete:
        problem = path.problem
        others = [p.problem for p in builder.dead_ends if p.problem != problem]
        if others:
            problem += "; other candidates: " + "; ".join(dict.fromkeys(others))
        if builder.exhausted:
            problem += " (the search was bounded and stopped early)"
        return Check("path", False, problem)
    names = path_names(path.certificates) + " (trust root)"
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
        return _report_error(f"the validation could not be completed: {describe_error(exc)}")


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

    leaf_cert = ParsedCertificate(leaf)
    roots = [ParsedCertificate(c) for c in trust_roots]
    pool = [ParsedCertificate(c) for c in intermediates]
    builder = PathBuilder(leaf_cert, pool, roots, now)
    path, path_checks, tried = _choose_path(leaf_cert, builder, purpose, now)

    decoding = Check("decoding", True, "the certificate was read")
    if leaf_cert.problems:
        decoding = Check("decoding", False, f"{leaf_cert.label}: " + "; ".join(leaf_cert.problems))
    checks = [
        decoding,
        _guarded("path", lambda: _path_check(path, tried, builder)),
        *(path_checks[name] for name in PATH_CHECKS),
        _guarded("hostname", lambda: check_hostname(leaf_cert, hostname)),
        _guarded(
            "revocation",
            lambda: check_revocation(path, is_revoked, required=revocation_required),
        ),
    ]
    if not path.complete:
        checks[1] = Check("path", False, checks[1].detail)
    ran, verifier_error = run_verifier(
        leaf=leaf_cert,
        intermediates=[c.cert for c in pool],
        trust_roots=[c.cert for c in roots],
        purpose=purpose,
        hostname=hostname,
        now=now,
    )
    if verifier_error is not None:
        checks = merge_verifier_error(checks, verifier_error)
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
        return [], f"the {what} cannot be read: {describe_error(exc)}"


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
        return _report_error(f"the validation could not be completed: {describe_error(exc)}"), None
