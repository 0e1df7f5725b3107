"""Tests for kmsportal.crypto.validation: one check per aspect, failing exactly where expected."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.validation import (
    CHECK_NAMES,
    RevocationStatus,
    ValidationReport,
    validate_certificate,
)
from kmsportal.crypto.x509 import build_ca_certificate, parse_san, parse_subject

Issue = Callable[..., x509.Certificate]


def statuses(report: ValidationReport) -> dict[str, bool | None]:
    return {c.name: c.passed for c in report.checks}


def failed_names(report: ValidationReport) -> list[str]:
    return [c.name for c in report.failed]


@pytest.fixture(scope="module")
def server_cert(issue: Issue) -> x509.Certificate:
    return issue(
        "tls-server",
        "CN=www.example.org",
        [
            parse_san("dns:www.example.org"),
            parse_san("dns:*.api.example.org"),
            parse_san("ip:192.0.2.1"),
        ],
    )


@pytest.fixture(scope="module")
def client_cert(issue: Issue) -> x509.Certificate:
    return issue("tls-client", "CN=alice", [parse_san("dns:alice.example.org")])


@pytest.fixture(scope="module")
def validate(
    root_cert: x509.Certificate, intermediate_cert: x509.Certificate
) -> Callable[..., ValidationReport]:
    def run(leaf: x509.Certificate, **overrides: object) -> ValidationReport:
        arguments: dict[str, object] = {
            "leaf": leaf,
            "intermediates": [intermediate_cert],
            "trust_roots": [root_cert],
            "purpose": "server",
            "hostname": None,
        }
        arguments.update(overrides)
        return validate_certificate(**arguments)  # type: ignore[arg-type]

    return run


def test_good_server_certificate_passes_every_check(
    validate: Callable[..., ValidationReport],
    server_cert: x509.Certificate,
    intermediate_cert: x509.Certificate,
    root_cert: x509.Certificate,
) -> None:
    report = validate(
        server_cert, hostname="www.example.org", is_revoked=lambda cert: RevocationStatus("good")
    )
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.passed is True for c in report.checks), report.checks
    assert report.ok
    assert report.verifier_error is None
    assert report.path == [server_cert, intermediate_cert, root_cert]
    assert report.check("path").detail == (
        "CN=www.example.org → CN=Example Issuing CA,O=Example Org,C=DE → "
        "CN=Example Root CA,O=Example Org,C=DE (trust root)"
    )
    assert report.check("signatures").detail == "2 signatures verified"
    assert report.check("hostname").detail == "www.example.org matches dns:www.example.org"


def test_without_hostname_or_revocation_source_those_checks_are_skipped(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate
) -> None:
    report = validate(server_cert)
    assert report.ok
    assert statuses(report)["hostname"] is None
    assert statuses(report)["revocation"] is None
    assert report.check("revocation").detail.startswith("not checked")


@pytest.mark.parametrize(
    ("hostname", "matched"),
    [
        ("WWW.Example.org.", "dns:www.example.org"),
        ("v1.api.example.org", "dns:*.api.example.org"),
        ("192.0.2.1", "ip:192.0.2.1"),
    ],
)
def test_hostname_matching(
    validate: Callable[..., ValidationReport],
    server_cert: x509.Certificate,
    hostname: str,
    matched: str,
) -> None:
    report = validate(server_cert, hostname=hostname)
    assert report.ok, report.checks
    assert report.check("hostname").detail.endswith(f"matches {matched}")


@pytest.mark.parametrize(
    "hostname", ["other.example.org", "api.example.org", "a.b.api.example.org", "192.0.2.2"]
)
def test_wrong_hostname_fails_only_hostname(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate, hostname: str
) -> None:
    report = validate(server_cert, hostname=hostname)
    assert not report.ok
    assert failed_names(report) == ["hostname"]
    detail = report.check("hostname").detail
    assert detail.startswith(
        f"{hostname} does not match the certificate's names (dns:www.example.org"
    )


def test_expired_leaf_fails_validity_period(
    validate: Callable[..., ValidationReport], issue: Issue
) -> None:
    issued_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    expired = issue(
        "tls-server",
        "CN=old.example.org",
        [parse_san("dns:old.example.org")],
        days=30,
        now=issued_at,
    )
    report = validate(expired, hostname="old.example.org")
    assert failed_names(report) == ["validity period"]
    detail = report.check("validity period").detail
    expiry = expired.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    assert detail.startswith(f"'CN=old.example.org' expired on {expiry}")
    assert "not valid at validation time" in detail  # the library verifier agrees


def test_not_yet_valid(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate
) -> None:
    before = server_cert.not_valid_before_utc - dt.timedelta(hours=1)
    report = validate(server_cert, now=before)
    assert "validity period" in failed_names(report)
    assert "is not yet valid (valid from" in report.check("validity period").detail


def test_certificate_from_a_foreign_ca_fails_path(
    validate: Callable[..., ValidationReport], other_key: rsa.RSAPrivateKey, issue: Issue
) -> None:
    foreign_root = build_ca_certificate(
        subject=parse_subject("CN=Foreign Root CA"),
        public_key=other_key.public_key(),
        signer=LoadedKeySigner(other_key),
        issuer_certificate=None,
        days=365,
        path_length=None,
    )
    leaf = issue(
        "tls-server",
        "CN=www.foreign.example",
        [parse_san("dns:www.foreign.example")],
        issuer_certificate=foreign_root,
        signer=LoadedKeySigner(other_key),
    )
    report = validate(leaf, hostname="www.foreign.example")
    assert not report.ok
    assert failed_names(report) == ["path"]
    assert report.check("path").detail.startswith(
        "the issuer 'CN=Foreign Root CA' of 'CN=www.foreign.example' was not found"
    )
    assert statuses(report)["signatures"] is None
    assert report.verifier_error is not None

    self_signed = validate(foreign_root, purpose="any")
    assert failed_names(self_signed) == ["path"]
    assert "self-signed but is not one of the trust roots" in self_signed.check("path").detail


def test_missing_intermediate_fails_path(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate
) -> None:
    report = validate(server_cert, intermediates=[])
    assert failed_names(report) == ["path"]
    assert "the issuer 'CN=Example Issuing CA,O=Example Org,C=DE'" in report.check("path").detail


def test_rekeyed_intermediate_with_same_name_fails_signatures(
    validate: Callable[..., ValidationReport],
    server_cert: x509.Certificate,
    root_cert: x509.Certificate,
    root_signer: LoadedKeySigner,
    other_key: rsa.RSAPrivateKey,
) -> None:
    impostor = build_ca_certificate(
        subject=parse_subject("CN=Example Issuing CA,O=Example Org,C=DE"),
        public_key=other_key.public_key(),
        signer=root_signer,
        issuer_certificate=root_cert,
        days=30,
        path_length=0,
    )
    report = validate(server_cert, intermediates=[impostor])
    assert failed_names(report) == ["signatures"]
    assert report.check("signatures").detail.startswith(
        "the signature of 'CN=www.example.org' does not verify with the key of "
        "'CN=Example Issuing CA,O=Example Org,C=DE'"
    )


def test_client_certificate_used_as_server_fails_key_usage_and_eku(
    validate: Callable[..., ValidationReport], client_cert: x509.Certificate
) -> None:
    report = validate(client_cert, purpose="server")
    assert failed_names(report) == ["key usage and EKU"]
    detail = report.check("key usage and EKU").detail
    assert "(clientAuth) does not include serverAuth" in detail
    assert "required EKU not found" in detail  # the library verifier's message


def test_client_certificate_for_client_purpose(
    validate: Callable[..., ValidationReport],
    client_cert: x509.Certificate,
    server_cert: x509.Certificate,
) -> None:
    assert validate(client_cert, purpose="client").ok
    wrong = validate(server_cert, purpose="client")
    assert failed_names(wrong) == ["key usage and EKU"]


def test_client_certificate_without_san(
    validate: Callable[..., ValidationReport], issue: Issue
) -> None:
    # RFC 5280 allows a client certificate with only a subject name; cryptography's client
    # verifier insists on a SAN, so it is not consulted for such a certificate.
    bare = issue("kms-client", "CN=app-without-san", [])
    report = validate(bare, purpose="client")
    assert report.ok, report.checks
    assert not report.cross_checked
    assert validate(
        issue("kms-client", "CN=app", [parse_san("uri:spiffe://example.org/app")]), purpose="client"
    ).cross_checked


def test_purpose_any_accepts_other_profiles(
    validate: Callable[..., ValidationReport], issue: Issue
) -> None:
    signing = issue("code-signing", "CN=Release Signing", [])
    report = validate(signing, purpose="any")
    assert report.ok, report.checks
    assert report.verifier_error is None


def test_ca_certificate_as_server_leaf_fails_basic_constraints(
    validate: Callable[..., ValidationReport], intermediate_cert: x509.Certificate
) -> None:
    report = validate(intermediate_cert, purpose="server", intermediates=[])
    assert "basic constraints" in failed_names(report)
    assert (
        "is a CA certificate; a server certificate must not be a CA"
        in report.check("basic constraints").detail
    )


def test_revoked_status_fails_revocation(
    validate: Callable[..., ValidationReport],
    server_cert: x509.Certificate,
    intermediate_cert: x509.Certificate,
) -> None:
    revoked_at = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    seen: list[x509.Certificate] = []

    def lookup(cert: x509.Certificate) -> RevocationStatus | None:
        seen.append(cert)
        if cert == server_cert:
            return RevocationStatus("revoked", x509.ReasonFlags.key_compromise, revoked_at)
        return RevocationStatus("good")

    report = validate(server_cert, hostname="www.example.org", is_revoked=lookup)
    assert seen == [server_cert, intermediate_cert]  # never the trust root
    assert not report.ok
    assert failed_names(report) == ["revocation"]
    assert report.check("revocation").detail == (
        "'CN=www.example.org' was revoked on 2026-01-02 03:04 UTC (reason: keyCompromise)"
    )


def test_unknown_revocation_status_is_undecided(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate
) -> None:
    report = validate(server_cert, is_revoked=lambda cert: None)
    assert report.ok
    assert statuses(report)["revocation"] is None
    assert "status not known" in report.check("revocation").detail


def test_naive_now_is_refused(
    validate: Callable[..., ValidationReport], server_cert: x509.Certificate
) -> None:
    report = validate(server_cert, now=dt.datetime(2026, 1, 1))
    assert not report.ok
    assert "timezone-aware" in report.check("decoding").detail
