"""Fuzzing (Hypothesis, bounded): no certificate, chain, host name or CRL input makes the
validator or the CRL checks raise; each gives a structured answer with a reason."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsportal.crypto.crl import validate_crl
from kmsportal.crypto.validation import CHECK_NAMES, validate_certificate_data

NOW = dt.datetime.now(dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
NAME = x509.Name.from_rfc4514_string("CN=Fuzz Root")
ROOT = (
    x509.CertificateBuilder()
    .subject_name(NAME)
    .issuer_name(NAME)
    .public_key(KEY.public_key())
    .serial_number(1)
    .not_valid_before(NOW - dt.timedelta(days=1))
    .not_valid_after(NOW + dt.timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(x509.NameConstraints([x509.DNSName("example.com")], None), critical=True)
    .sign(KEY, hashes.SHA256())
)
LEAF = (
    x509.CertificateBuilder()
    .subject_name(x509.Name.from_rfc4514_string("CN=leaf"))
    .issuer_name(NAME)
    .public_key(KEY.public_key())
    .serial_number(2)
    .not_valid_before(NOW - dt.timedelta(days=1))
    .not_valid_after(NOW + dt.timedelta(days=30))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example.com")]), critical=False)
    .sign(KEY, hashes.SHA256())
).public_bytes(serialization.Encoding.DER)
CRL = (
    x509.CertificateRevocationListBuilder()
    .issuer_name(NAME)
    .last_update(NOW - dt.timedelta(minutes=1))
    .next_update(NOW + dt.timedelta(days=1))
    .add_extension(x509.CRLNumber(3), critical=False)
    .add_revoked_certificate(
        x509.RevokedCertificateBuilder().serial_number(9).revocation_date(NOW).build()
    )
    .sign(KEY, hashes.SHA256())
).public_bytes(serialization.Encoding.DER)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def mutated(template: bytes) -> st.SearchStrategy[bytes]:
    """The template with a few bytes changed, cut short, or grown: mostly parseable-looking
    DER that reaches the parsers' corners."""
    edits = st.lists(
        st.tuples(st.integers(0, len(template) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )

    def apply(changes: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(template)
        for position, value in changes:
            data[position] = value
        return bytes(data[: len(data) - cut])

    return st.builds(apply, edits, st.integers(0, 8))


@pytest.mark.parametrize("purpose", ["any", "server", "client"])
@FUZZ
@given(
    data=st.one_of(st.binary(max_size=600), mutated(LEAF)),
    hostname=st.one_of(st.none(), st.text(max_size=40)),
)
def test_validator_answers_for_any_certificate_bytes(
    purpose: str, data: bytes, hostname: str | None
) -> None:
    report, _leaf = validate_certificate_data(
        certificate=data,
        trust_roots=[ROOT],
        purpose=purpose,
        hostname=hostname,  # type: ignore[arg-type]
    )
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    if not report.ok:
        assert report.failed and all(c.detail for c in report.failed)


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), mutated(CRL)))
def test_crl_checks_answer_for_any_crl_bytes(data: bytes) -> None:
    result = validate_crl(data, issuer_certificate=ROOT, now=NOW, certificate=ROOT)
    assert result.ok or all(result.problems)


def test_the_templates_themselves_pass() -> None:
    report, _ = validate_certificate_data(certificate=LEAF, trust_roots=[ROOT], purpose="any")
    assert report.ok, report.checks
    assert validate_crl(CRL, issuer_certificate=ROOT, now=NOW).ok
