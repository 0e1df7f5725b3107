"""RFC 5280 §6.3.3 refusals that OpenSSL's ``ca -gencrl`` cannot produce: CRLs built by hand
with cryptography, signed with the real CA key, checked through ``validate_crl`` (the entry
shared by ``kmsclient crl``, ``verify-cert`` and the portal) and through ``kmsclient crl``."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from kmsclient.crl import CRLInvalid, check_crl
from kmsportal.crypto.crl import CRLValidation, validate_crl
from tests.crypto.conftest import INTERMEDIATE_CRL_URL

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.8")


def ski_of(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def make_crl(
    issuer_certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    *,
    number: int | None = 5,
    delta_base: int | None = None,
    delta_critical: bool = True,
    idp: x509.IssuingDistributionPoint | None = None,
    aki: bytes | None = None,
    revoked: list[x509.RevokedCertificate] | None = None,
    freshest: str | None = None,
) -> x509.CertificateRevocationList:
    """A CRL in order unless told otherwise: CRLNumber, AKI of the CA, current."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_certificate.subject)
        .last_update(NOW - dt.timedelta(minutes=5))
        .next_update(NOW + dt.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier(aki or ski_of(issuer_certificate), None, None),
            critical=False,
        )
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    if delta_base is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_base), critical=delta_critical)
    if idp is not None:
        builder = builder.add_extension(idp, critical=True)
    if freshest is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(freshest)], None, None, None)
        builder = builder.add_extension(x509.FreshestCRL([point]), critical=False)
    for entry in revoked or []:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA256())


def scope(**flags: object) -> x509.IssuingDistributionPoint:
    arguments: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    arguments.update(flags)
    return x509.IssuingDistributionPoint(**arguments)  # type: ignore[arg-type]


@pytest.fixture
def ca(intermediate_cert: x509.Certificate, intermediate_key: rsa.RSAPrivateKey):  # type: ignore[no-untyped-def]
    return intermediate_cert, intermediate_key


@pytest.fixture
def leaf(issue: Callable[..., x509.Certificate]) -> x509.Certificate:
    return issue("tls-server", "CN=crl.example.org", [x509.DNSName("crl.example.org")])


def check(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, **kw: object
) -> CRLValidation:
    return validate_crl(crl, issuer_certificate=issuer, now=NOW, **kw)  # type: ignore[arg-type]


def test_a_hand_built_crl_in_order_is_accepted(ca, leaf: x509.Certificate) -> None:
    """The baseline every refusal below departs from by one thing."""
    cert, key = ca
    idp = scope(full_name=[x509.UniformResourceIdentifier(INTERMEDIATE_CRL_URL)])
    result = check(make_crl(cert, key, idp=idp), cert, certificate=leaf)
    assert result.problems == ()


def test_an_unknown_critical_crl_entry_extension_is_refused(ca) -> None:
    cert, key = ca
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(0x1234)
        .revocation_date(NOW - dt.timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=True)
        .build()
    )
    result = check(make_crl(cert, key, revoked=[entry]), cert)
    assert result.problems == (
        "the CRL entry for serial 1234 has the unknown critical extension 1.3.6.1.4.1.99999.8",
    )
    assert result.entries is None


def test_a_certificate_issuer_entry_extension_is_refused(ca) -> None:
    cert, key = ca
    other = x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")]))
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(0x99)
        .revocation_date(NOW - dt.timedelta(hours=1))
        .add_extension(x509.CertificateIssuer([other]), critical=True)
        .build()
    )
    result = check(make_crl(cert, key, revoked=[entry]), cert)
    assert result.problems == ("the CRL has certificateIssuer entries (an indirect CRL)",)


def test_an_idp_naming_another_distribution_point_does_not_cover_the_certificate(
    ca, leaf: x509.Certificate
) -> None:
    cert, key = ca
    idp = scope(full_name=[x509.UniformResourceIdentifier("http://elsewhere.example/other.crl")])
    result = check(make_crl(cert, key, idp=idp), cert, certificate=leaf)
    assert result.problems == (
        "the CRL's issuing distribution point is not one of the certificate's CRL "
        "distribution points, so it does not cover this certificate",
    )


def test_an_idp_for_ca_certificates_does_not_cover_an_end_entity(
    ca, leaf: x509.Certificate
) -> None:
    cert, key = ca
    result = check(
        make_crl(cert, key, idp=scope(only_contains_ca_certs=True)), cert, certificate=leaf
    )
    assert result.problems == (
        "the CRL only covers CA certificates, and this one is an end entity",
    )


def test_an_indirect_crl_is_refused(ca) -> None:
    cert, key = ca
    result = check(make_crl(cert, key, idp=scope(indirect_crl=True)), cert)
    assert result.problems == ("the CRL is an indirect CRL, which is not supported",)


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + body


def sha1_signed(crl: x509.CertificateRevocationList, key: rsa.RSAPrivateKey) -> bytes:
    """``crl`` re-signed with sha1WithRSAEncryption, which cryptography refuses to make."""
    sha256_rsa, sha1_rsa = (
        bytes.fromhex("06092a864886f70d01010b"),
        bytes.fromhex("06092a864886f70d010105"),
    )
    tbs = crl.tbs_certlist_bytes
    assert tbs.count(sha256_rsa) == 1
    tbs = tbs.replace(sha256_rsa, sha1_rsa)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - on purpose
    algorithm = _tlv(0x30, sha1_rsa + b"\x05\x00")
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def test_a_sha1_signed_crl_is_refused(ca) -> None:
    cert, key = ca
    forged = sha1_signed(make_crl(cert, key), key)
    parsed = x509.load_der_x509_crl(forged)
    # A correct signature (cryptography's is_signature_valid refuses SHA-1 outright):
    sha1 = hashes.SHA1()  # noqa: S303 - on purpose
    cert.public_key().verify(parsed.signature, parsed.tbs_certlist_bytes, padding.PKCS1v15(), sha1)
    result = validate_crl(forged, issuer_certificate=cert, now=NOW)
    assert result.problems == ("the CRL is signed with sha1; SHA-256 or stronger is needed",)


def test_an_authority_key_identifier_of_another_key_is_refused(ca) -> None:
    cert, key = ca
    result = check(make_crl(cert, key, aki=b"\x01" * 20), cert)
    assert result.problems == ("the CRL's authority key identifier is not the CA's key",)


# --- a delta CRL must belong to its complete CRL (RFC 5280 §5.2.4, §6.3.3 (c)) ----------------


@pytest.fixture
def base(ca) -> CRLValidation:
    cert, key = ca
    result = check(make_crl(cert, key, number=5), cert)
    assert result.ok, result.problems
    return result


def test_a_delta_that_belongs_to_its_base_is_accepted(ca, base: CRLValidation) -> None:
    cert, key = ca
    assert check(make_crl(cert, key, number=6, delta_base=5), cert, base=base).problems == ()


def test_a_delta_crl_indicator_that_is_not_critical_is_refused(ca, base: CRLValidation) -> None:
    cert, key = ca
    delta = make_crl(cert, key, number=6, delta_base=5, delta_critical=False)
    assert check(delta, cert, base=base).problems == (
        "the delta CRL indicator is not critical (RFC 5280 §5.2.4)",
    )


def test_a_delta_from_another_issuer_is_refused(
    ca, root_cert: x509.Certificate, root_key: rsa.RSAPrivateKey
) -> None:
    cert, key = ca
    root_base = check(make_crl(root_cert, root_key, number=5), root_cert)
    assert root_base.ok, root_base.problems
    delta = make_crl(cert, key, number=6, delta_base=5)
    assert check(delta, cert, base=root_base).problems == (
        "the delta CRL and the complete CRL have different issuers",
    )


def test_a_delta_that_needs_a_newer_base_is_refused(ca, base: CRLValidation) -> None:
    cert, key = ca
    delta = make_crl(cert, key, number=8, delta_base=7)
    assert check(delta, cert, base=base).problems == (
        "the delta CRL needs complete CRL #7 or newer; the complete CRL is #5",
    )


def test_a_delta_older_than_its_base_is_refused(ca, base: CRLValidation) -> None:
    cert, key = ca
    delta = make_crl(cert, key, number=4, delta_base=3)
    assert check(delta, cert, base=base).problems == (
        "the delta CRL is older than the complete CRL",
    )


def test_a_delta_with_another_scope_is_refused(ca, base: CRLValidation) -> None:
    cert, key = ca
    delta = make_crl(cert, key, number=6, delta_base=5, idp=scope(only_contains_user_certs=True))
    assert check(delta, cert, base=base).problems == (
        "the delta CRL's scope differs from the complete CRL's",
    )


# --- the same refusals through kmsclient crl ---------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP, and its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def test_kmsclient_crl_refuses_a_delta_whose_indicator_is_not_critical(
    ca, served: tuple[Path, str]
) -> None:
    cert, key = ca
    directory, url = served
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "issuing.crl").write_bytes(
        der(make_crl(cert, key, number=5, freshest=f"{url}/issuing-delta.crl"))
    )
    (directory / "issuing-delta.crl").write_bytes(
        der(make_crl(cert, key, number=6, delta_base=5, delta_critical=False))
    )
    with pytest.raises(CRLInvalid) as refused:
        check_crl(url=f"{url}/issuing.crl", ca_certificate=str(directory / "ca.pem"), serial="12")
    assert str(refused.value) == (
        f"the delta CRL at {url}/issuing-delta.crl cannot be relied on: "
        "the delta CRL indicator is not critical (RFC 5280 §5.2.4)"
    )


def test_kmsclient_crl_refuses_an_unknown_critical_entry_extension(
    ca, served: tuple[Path, str]
) -> None:
    cert, key = ca
    directory, url = served
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(0x12)
        .revocation_date(NOW - dt.timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=True)
        .build()
    )
    (directory / "issuing.crl").write_bytes(der(make_crl(cert, key, revoked=[entry])))
    with pytest.raises(CRLInvalid) as refused:
        check_crl(url=f"{url}/issuing.crl", ca_certificate=str(directory / "ca.pem"), serial="12")
    assert str(refused.value) == (
        f"the CRL at {url}/issuing.crl cannot be relied on: the CRL entry for serial 12 has "
        "the unknown critical extension 1.3.6.1.4.1.99999.8"
    )
