"""Tests for kmsportal.crypto.x509 and kmsportal.crypto.profiles (checked against openssl)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from kmsportal.crypto.profiles import (
    KEY_USAGE_FLAGS,
    SAN_TYPES,
    TLS_SERVER_DEFAULT_DAYS,
    ProfileError,
    configure_tls_server_days,
    get_profile,
)
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    CLOCK_SKEW,
    CSR_MAX_BYTES,
    DEFAULT_CA_KEY_TYPE,
    PROFILES,
    CertificateLoadError,
    CSRError,
    ExportError,
    IssuanceError,
    KeyType,
    PrivateKeyError,
    SANError,
    SubjectError,
    build_ca_certificate,
    certificate_to_der,
    certificate_to_pem,
    csr_requested_sans,
    describe_certificate,
    describe_public_key,
    format_name,
    format_san,
    generate_pkcs12,
    generate_private_key,
    load_certificate,
    load_certificates,
    load_csr,
    new_serial_number,
    parse_san,
    parse_subject,
    private_key_from_der,
    private_key_to_der,
    private_key_to_encrypted_pem,
)
from tests.crypto.conftest import (
    INTERMEDIATE_CA_ISSUERS_URL,
    INTERMEDIATE_CRL_URL,
    INTERMEDIATE_OCSP_URL,
    ROOT_CA_ISSUERS_URL,
    ROOT_CRL_URL,
    ROOT_OCSP_URL,
)

Issue = Callable[..., x509.Certificate]
OpenSSL = Callable[..., subprocess.CompletedProcess[str]]


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def make_csr(
    key: object,
    *,
    subject: str = "CN=www.example.org",
    sans: list[x509.GeneralName] | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_subject(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


# --- keys ----------------------------------------------------------------------------------


def test_default_ca_key_type_is_rsa3072() -> None:
    assert DEFAULT_CA_KEY_TYPE is KeyType.rsa3072
    assert [k.value for k in KeyType] == ["rsa2048", "rsa3072", "rsa4096", "ecp256", "ecp384"]
    assert KeyType.rsa3072.label == "RSA 3072"


@pytest.mark.parametrize(
    ("key_type", "described"), [("ecp256", "EC P-256"), ("ecp384", "EC P-384")]
)
def test_generate_ec_keys(key_type: str, described: str) -> None:
    key = generate_private_key(KeyType(key_type))
    assert describe_public_key(key.public_key()) == described


def test_describe_public_key(leaf_key: rsa.RSAPrivateKey) -> None:
    assert describe_public_key(leaf_key.public_key()) == "RSA 2048"
    assert describe_public_key(ed25519.Ed25519PrivateKey.generate().public_key()) == "Ed25519"


def test_private_key_der_round_trip(
    leaf_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for key in (leaf_key, ec_key):
        der = private_key_to_der(key)
        assert der.startswith(b"\x30")
        assert private_key_from_der(der).private_numbers() == key.private_numbers()


def test_private_key_from_der_refuses_garbage_and_ed25519() -> None:
    with pytest.raises(PrivateKeyError, match="not an unencrypted DER private key"):
        private_key_from_der(b"not a key")
    ed_der = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PrivateKeyError, match="Ed25519; only RSA and EC"):
        private_key_from_der(ed_der)


def test_encrypted_pem(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = private_key_to_encrypted_pem(ec_key, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = serialization.load_pem_private_key(pem, password=b"correct horse")
    assert loaded.private_numbers() == ec_key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(ExportError, match="at least 8 characters"):
        private_key_to_encrypted_pem(ec_key, b"short")


# --- serial numbers ------------------------------------------------------------------------


def test_serial_numbers_are_large_positive_and_unique() -> None:
    serials = [new_serial_number() for _ in range(1000)]
    assert len(set(serials)) == 1000
    assert all(0 < s < 2**159 for s in serials)
    assert all(s.bit_length() >= 64 for s in serials)
    # 159 random bits: in 1000 draws the top bit is set roughly half of the time.
    assert any(s.bit_length() == 159 for s in serials)


def test_issued_serial_fits_in_20_octets(issue: Issue) -> None:
    cert = issue("tls-server", "CN=www.example.org", [parse_san("dns:www.example.org")])
    assert 0 < cert.serial_number < 2**159
    assert len(describe_certificate(cert).serial_number) <= 40


# --- names ---------------------------------------------------------------------------------


def test_parse_subject_order_and_round_trip() -> None:
    name = parse_subject("CN=Example Root, O=Example Org, C=DE")
    # RFC 4514 strings list the most specific RDN first; the DER order is the reverse.
    assert [a.oid for a in name] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]
    assert format_name(name) == "CN=Example Root,O=Example Org,C=DE"
    assert parse_subject(format_name(name)) == name


def test_parse_subject_all_attributes_and_escapes() -> None:
    name = parse_subject(
        r"CN=Doe\, Jane,OU=Ops,OU=Keys,O=Example Org,L=Berlin,ST=Berlin,C=de,"
        r"emailAddress=jane@example.org,E=ops@example.org,serialNumber=12345"
    )
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Doe, Jane"
    assert name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert len(name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)) == 2
    assert len(name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)) == 2
    assert parse_subject(format_name(name)) == name
    assert parse_subject(r"CN=Z\C3\BCrich") == parse_subject("CN=Zürich")


def test_non_ascii_subject_round_trips_through_a_certificate(
    root_key: rsa.RSAPrivateKey, root_signer: LoadedKeySigner, openssl: OpenSSL, tmp_path: Path
) -> None:
    subject = parse_subject("CN=Zürich Ünïcode CA,O=Bücher & Söhne,C=CH")
    cert = build_ca_certificate(
        subject=subject,
        public_key=root_key.public_key(),
        signer=root_signer,
        issuer_certificate=None,
        days=30,
        path_length=None,
    )
    again = load_certificate(certificate_to_der(cert))
    assert format_name(again.subject) == "CN=Zürich Ünïcode CA,O=Bücher & Söhne,C=CH"
    assert describe_certificate(again).subject == "CN=Zürich Ünïcode CA,O=Bücher & Söhne,C=CH"
    (tmp_path / "c.pem").write_bytes(certificate_to_pem(cert))
    out = openssl(
        "x509", "-in", tmp_path / "c.pem", "-noout", "-subject", "-nameopt", "utf8,sep_comma_plus"
    )
    assert out.returncode == 0, out.stderr
    assert "Zürich Ünïcode CA" in out.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the subject is empty"),
        ("   ", "the subject is empty"),
        ("CN=Example,XX=foo", "unknown attribute 'XX'"),
        ("CN=", "the value of CN is empty"),
        ("CN=Example,O=  ", "the value of O is empty"),
        ("CN=Example,C=Germany", "two-letter"),
        ("CN=Example,C=D1", "two-letter"),
        ("CN=Example,,O=x", "empty component"),
        ("Example", "not of the form ATTRIBUTE=value"),
        ("CN=" + "x" * 65, "at most 64"),
        ("emailAddress=jörg@example.org", "ASCII email"),
    ],
)
def test_parse_subject_errors(text: str, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        parse_subject(text)


# --- SANs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "formatted"),
    [
        ("dns:www.example.org", x509.DNSName("www.example.org"), "dns:www.example.org"),
        ("DNS:WWW.Example.ORG.", x509.DNSName("www.example.org"), "dns:www.example.org"),
        ("dns:*.example.org", x509.DNSName("*.example.org"), "dns:*.example.org"),
        ("dns:bücher.example", x509.DNSName("xn--bcher-kva.example"), "dns:xn--bcher-kva.example"),
        ("ip:192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1")), "ip:192.0.2.1"),
        ("ip:2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1")), "ip:2001:db8::1"),
        ("email:a@example.org", x509.RFC822Name("a@example.org"), "email:a@example.org"),
        (
            "uri:https://kms.example.org/clients/7",
            x509.UniformResourceIdentifier("https://kms.example.org/clients/7"),
            "uri:https://kms.example.org/clients/7",
        ),
        (
            "uri:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
            "uri:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        ),
    ],
)
def test_parse_and_format_san(text: str, expected: x509.GeneralName, formatted: str) -> None:
    assert parse_san(text) == expected
    assert format_san(expected) == formatted
    assert parse_san(format_san(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("www.example.org", "not a subject alternative name"),
        ("host:www.example.org", "not a subject alternative name"),
        ("dns:", "is empty"),
        ("dns:-bad.example.org", "the label '-bad'"),
        ("dns:exa_mple.org", "the label 'exa_mple'"),
        ("dns:a..example.org", "empty label"),
        ("dns:www.*.example.org", "wildcard is only allowed"),
        ("dns:*.org", "too broad"),
        ("dns:" + "a" * 64 + ".example.org", "1-63"),
        ("ip:300.1.2.3", "not a valid IPv4 or IPv6 address"),
        ("ip:192.0.2.0/24", "not a valid IPv4 or IPv6 address"),
        ("email:no-at-sign", "expected user@domain"),
        ("email:jörg@example.org", "must be ASCII"),
        ("email:a@bad_domain.org", "not a valid email domain"),
        ("uri:/relative/path", "not an absolute URI"),
        ("uri:https:///no-host", "no host"),
        ("uri:https://example.org/a b", "without spaces"),
    ],
)
def test_parse_san_errors(text: str, message: str) -> None:
    with pytest.raises(SANError, match=message):
        parse_san(text)


# --- profiles ------------------------------------------------------------------------------


def test_profile_registry() -> None:
    assert set(PROFILES) == {
        "tls-server",
        "tls-client",
        "kms-client",
        "kms-server",
        "email",
        "code-signing",
        "ocsp-responder",
    }
    for profile in PROFILES.values():
        assert profile.allowed_san_types <= SAN_TYPES
        assert set(profile.key_usage) <= set(KEY_USAGE_FLAGS)
    assert PROFILES["tls-server"].san_required
    assert PROFILES["tls-server"].max_validity_days == 200
    assert PROFILES["ocsp-responder"].max_validity_days == 30
    assert get_profile("email") is PROFILES["email"]
    with pytest.raises(ProfileError, match="unknown certificate profile 'nope'"):
        get_profile("nope")
    with pytest.raises(ProfileError, match="not a leaf profile"):
        get_profile("sub-ca")


LEAF_CASES = [
    # profile, subject, SANs, openssl -purpose (None: plain verify only)
    ("tls-server", "CN=www.example.org", ["dns:www.example.org", "ip:192.0.2.10"], "sslserver"),
    ("tls-client", "CN=alice,O=Example Org", ["email:alice@example.org"], "sslclient"),
    ("kms-client", "CN=app-7", ["uri:https://kms.example.org/clients/7"], "sslclient"),
    ("kms-server", "CN=kms.example.org", ["dns:kms.example.org"], "sslserver"),
    ("email", "CN=Alice,emailAddress=alice@example.org", ["email:alice@example.org"], "smimesign"),
    ("code-signing", "CN=Example Release Signing,O=Example Org", [], None),
    ("ocsp-responder", "CN=Example OCSP Responder", [], None),
]


@pytest.mark.parametrize(("profile_name", "subject", "sans", "purpose"), LEAF_CASES)
def test_every_profile_verifies_with_openssl(
    issue: Issue,
    pki_dir: Path,
    openssl: OpenSSL,
    profile_name: str,
    subject: str,
    sans: list[str],
    purpose: str | None,
) -> None:
    cert = issue(profile_name, subject, [parse_san(s) for s in sans])
    leaf_pem = pki_dir / f"{profile_name}.pem"
    leaf_pem.write_bytes(certificate_to_pem(cert))
    base = [
        "verify",
        "-x509_strict",  # also RFC 5280 conformance: AKI/SKI present, critical basicConstraints
        "-CAfile",
        pki_dir / "root.pem",
        "-untrusted",
        pki_dir / "intermediate.pem",
    ]

    plain = openssl(*base, leaf_pem)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.strip().endswith(": OK")
    if purpose:
        with_purpose = openssl(*base, "-purpose", purpose, leaf_pem)
        assert with_purpose.stdout.strip().endswith(": OK"), (
            with_purpose.stdout + with_purpose.stderr
        )

    text = openssl("x509", "-in", leaf_pem, "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "CA:FALSE" in text.stdout

    profile = PROFILES[profile_name]
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment == bool(profile.key_usage.get("key_encipherment"))
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == list(profile.extended_key_usage)
    # RFC 5280 counts validity inclusively: exactly the maximum, not a second more.
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(
        days=profile.max_validity_days
    ) - dt.timedelta(seconds=1)
    if sans:
        san = ext(cert, x509.SubjectAlternativeName)
        assert not san.critical
        assert [format_san(n) for n in san.value] == [format_san(parse_san(s)) for s in sans]
    else:
        with pytest.raises(x509.ExtensionNotFound):
            ext(cert, x509.SubjectAlternativeName)
    if profile.ocsp_no_check:
        assert isinstance(ext(cert, x509.OCSPNoCheck).value, x509.OCSPNoCheck)
        assert "OCSP No Check" in text.stdout


def test_cryptography_verifier_accepts_server_and_client_certs(
    issue: Issue, root_cert: x509.Certificate, intermediate_cert: x509.Certificate
) -> None:
    server = issue("tls-server", "CN=www.example.org", [parse_san("dns:www.example.org")])
    client = issue("kms-client", "CN=app-7", [parse_san("uri:https://kms.example.org/clients/7")])
    builder = verification.PolicyBuilder().store(verification.Store([root_cert]))
    chain = builder.build_server_verifier(verification.DNSName("www.example.org")).verify(
        server, [intermediate_cert]
    )
    assert chain == [server, intermediate_cert, root_cert]
    verified = builder.build_client_verifier().verify(client, [intermediate_cert])
    assert verified.chain[-1] == root_cert


def test_ec_leaf_key_has_no_key_encipherment(
    issue: Issue, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # RFC 8813: keyEncipherment is meaningless (and forbidden) for EC keys.
    server = issue(
        "tls-server",
        "CN=ec.example.org",
        [parse_san("dns:ec.example.org")],
        public_key=ec_key.public_key(),
    )
    assert not ext(server, x509.KeyUsage).value.key_encipherment
    mail = issue(
        "email", "CN=Bob", [parse_san("email:bob@example.org")], public_key=ec_key.public_key()
    )
    assert ext(mail, x509.KeyUsage).value.key_agreement


# --- CA certificates -----------------------------------------------------------------------


def test_root_certificate_extensions(
    root_cert: x509.Certificate, root_key: rsa.RSAPrivateKey
) -> None:
    assert root_cert.subject == root_cert.issuer
    root_cert.verify_directly_issued_by(root_cert)
    constraints = ext(root_cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    usage = ext(root_cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert usage.value.digital_signature
    ski = ext(root_cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    aki = ext(root_cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        with pytest.raises(x509.ExtensionNotFound):
            ext(root_cert, kind)
    span = root_cert.not_valid_after_utc - root_cert.not_valid_before_utc
    assert span == dt.timedelta(days=3650)
    backdate = dt.datetime.now(dt.UTC) - root_cert.not_valid_before_utc
    assert CLOCK_SKEW - dt.timedelta(minutes=1) < backdate < CLOCK_SKEW + dt.timedelta(minutes=5)


def test_intermediate_and_leaf_carry_ski_aki_cdp_aia(
    root_cert: x509.Certificate, intermediate_cert: x509.Certificate, issue: Issue
) -> None:
    summary = describe_certificate(intermediate_cert)
    assert summary.is_ca and summary.path_length == 0
    assert summary.crl_distribution_points == (ROOT_CRL_URL,)
    assert summary.ca_issuers_urls == (ROOT_CA_ISSUERS_URL,)
    assert summary.ocsp_urls == (ROOT_OCSP_URL,)
    assert (
        summary.authority_key_identifier == describe_certificate(root_cert).subject_key_identifier
    )

    leaf = issue("tls-server", "CN=www.example.org", [parse_san("dns:www.example.org")])
    leaf_summary = describe_certificate(leaf)
    assert leaf_summary.subject_key_identifier
    assert leaf_summary.authority_key_identifier == summary.subject_key_identifier
    assert leaf_summary.crl_distribution_points == (INTERMEDIATE_CRL_URL,)
    assert leaf_summary.ca_issuers_urls == (INTERMEDIATE_CA_ISSUERS_URL,)
    assert leaf_summary.ocsp_urls == (INTERMEDIATE_OCSP_URL,)
    aia = ext(leaf, x509.AuthorityInformationAccess).value
    assert {d.access_method for d in aia} == {
        AuthorityInformationAccessOID.OCSP,
        AuthorityInformationAccessOID.CA_ISSUERS,
    }


def test_ocsp_responder_has_no_ocsp_pointer(issue: Issue) -> None:
    cert = issue("ocsp-responder", "CN=Example OCSP Responder", [])
    summary = describe_certificate(cert)
    assert summary.ocsp_no_check
    assert summary.ocsp_urls == ()
    assert summary.ca_issuers_urls == (INTERMEDIATE_CA_ISSUERS_URL,)


def test_intermediate_outliving_its_parent_is_refused(
    root_cert: x509.Certificate, root_signer: LoadedKeySigner, other_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(IssuanceError) as info:
        build_ca_certificate(
            subject=parse_subject("CN=Too Long CA"),
            public_key=other_key.public_key(),
            signer=root_signer,
            issuer_certificate=root_cert,
            days=4000,
            path_length=0,
            crl_distribution_url=ROOT_CRL_URL,
            ca_issuers_url=ROOT_CA_ISSUERS_URL,
            ocsp_url=ROOT_OCSP_URL,
        )
    message = str(info.value)
    assert message.startswith("the intermediate would expire on ")
    assert "after its parent CA (expires " in message
    # The root lives 3650 days from its own backdated start: 3650 days still fit within the
    # same second, 3649 once a second has passed.
    assert re.search(r"; choose at most 36(49|50) days$", message)


@pytest.mark.parametrize(
    ("parent_fixture", "path_length", "message"),
    [
        (
            "root_cert",
            1,
            r"the path length \(1\) must be less than the parent CA's path length \(1\); choose at most 0",
        ),
        ("root_cert", None, r"the path length \(no limit\) must be less than"),
        ("intermediate_cert", 0, "has path length 0, so it cannot issue intermediate CA"),
    ],
)
def test_path_length_violations(
    request: pytest.FixtureRequest,
    root_signer: LoadedKeySigner,
    intermediate_signer: LoadedKeySigner,
    other_key: rsa.RSAPrivateKey,
    parent_fixture: str,
    path_length: int | None,
    message: str,
) -> None:
    parent = request.getfixturevalue(parent_fixture)
    signer = root_signer if parent_fixture == "root_cert" else intermediate_signer
    with pytest.raises(IssuanceError, match=message):
        build_ca_certificate(
            subject=parse_subject("CN=Child CA"),
            public_key=other_key.public_key(),
            signer=signer,
            issuer_certificate=parent,
            days=30,
            path_length=path_length,
        )


def test_ca_signer_must_match(
    root_cert: x509.Certificate, intermediate_signer: LoadedKeySigner, other_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(IssuanceError, match="signing key does not belong"):
        build_ca_certificate(
            subject=parse_subject("CN=Child CA"),
            public_key=other_key.public_key(),
            signer=intermediate_signer,
            issuer_certificate=root_cert,
            days=30,
            path_length=0,
        )
    with pytest.raises(IssuanceError, match="self-signed root must be signed with its own key"):
        build_ca_certificate(
            subject=parse_subject("CN=Odd Root"),
            public_key=other_key.public_key(),
            signer=intermediate_signer,
            issuer_certificate=None,
            days=30,
            path_length=None,
        )


def test_default_validity_ends_with_the_parent_when_signed_a_tick_later(
    root_cert: x509.Certificate, root_signer: LoadedKeySigner, other_key: rsa.RSAPrivateKey
) -> None:
    """A default validity planned as "the parent's remaining days" may cross a second before
    signing: ``end_with_parent`` ends the intermediate with its parent then, while the same
    days as an explicit choice are refused."""
    one_tick_later = root_cert.not_valid_before_utc + dt.timedelta(seconds=1)
    days = (root_cert.not_valid_after_utc - root_cert.not_valid_before_utc).days

    def build(**flags: bool) -> x509.Certificate:
        return build_ca_certificate(
            subject=parse_subject("CN=Default Validity CA"),
            public_key=other_key.public_key(),
            signer=root_signer,
            issuer_certificate=root_cert,
            days=days,
            path_length=0,
            not_before=one_tick_later,
            **flags,
        )

    with pytest.raises(IssuanceError, match="after its parent CA"):
        build()
    cert = build(end_with_parent=True)
    assert cert.not_valid_before_utc == one_tick_later
    assert cert.not_valid_after_utc == root_cert.not_valid_after_utc


def test_ca_with_explicit_serial_and_start(
    root_cert: x509.Certificate, root_signer: LoadedKeySigner, other_key: rsa.RSAPrivateKey
) -> None:
    start = root_cert.not_valid_before_utc + dt.timedelta(hours=1)
    cert = build_ca_certificate(
        subject=parse_subject("CN=Explicit CA"),
        public_key=other_key.public_key(),
        signer=root_signer,
        issuer_certificate=root_cert,
        days=30,
        path_length=0,
        serial_number=0x1234,
        not_before=start,
    )
    assert cert.serial_number == 0x1234
    assert cert.not_valid_before_utc == start.replace(microsecond=0)
    assert describe_certificate(cert).serial_number == "1234"
    with pytest.raises(IssuanceError, match="needs a subject name"):
        build_ca_certificate(
            subject=x509.Name([]),
            public_key=other_key.public_key(),
            signer=root_signer,
            issuer_certificate=root_cert,
            days=30,
            path_length=0,
        )
    with pytest.raises(IssuanceError, match="serial number must be a positive integer"):
        build_ca_certificate(
            subject=parse_subject("CN=Explicit CA"),
            public_key=other_key.public_key(),
            signer=root_signer,
            issuer_certificate=root_cert,
            days=30,
            path_length=0,
            serial_number=0,
        )


def test_leaf_cannot_issue(
    issue: Issue, leaf_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    leaf = issue("tls-server", "CN=www.example.org", [parse_san("dns:www.example.org")])
    with pytest.raises(IssuanceError, match="is not a CA certificate"):
        build_ca_certificate(
            subject=parse_subject("CN=Child CA"),
            public_key=other_key.public_key(),
            signer=LoadedKeySigner(leaf_key),
            issuer_certificate=leaf,
            days=30,
            path_length=None,
        )


# --- leaf issuance errors and validity -----------------------------------------------------


def test_san_type_not_allowed_by_profile(issue: Issue) -> None:
    with pytest.raises(
        IssuanceError,
        match=r"tls-server profile does not allow email addresses as SAN \(email:a@example.org\); allowed: DNS name or IP address",
    ):
        issue(
            "tls-server", "CN=x", [parse_san("dns:x.example.org"), parse_san("email:a@example.org")]
        )
    with pytest.raises(
        IssuanceError, match="code-signing profile does not allow subject alternative names"
    ):
        issue("code-signing", "CN=Signer", [parse_san("dns:x.example.org")])


def test_missing_required_san(issue: Issue) -> None:
    with pytest.raises(
        IssuanceError,
        match=r"tls-server profile requires at least one subject alternative name \(DNS name or IP address\)",
    ):
        issue("tls-server", "CN=www.example.org", [])
    with pytest.raises(IssuanceError, match="email profile requires at least one"):
        issue("email", "CN=Alice", [])


def test_days_over_profile_maximum(issue: Issue) -> None:
    with pytest.raises(
        IssuanceError, match="tls-server profile allows at most 200 days; 201 days were requested"
    ):
        issue("tls-server", "CN=x", [parse_san("dns:x.example.org")], days=201)
    cert = issue("tls-server", "CN=x", [parse_san("dns:x.example.org")], days=90)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(
        days=90
    ) - dt.timedelta(seconds=1)


def test_weak_leaf_key_is_refused(issue: Issue, weak_rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(IssuanceError, match="1024-bit RSA key; at least 2048 bits are required"):
        issue("tls-client", "CN=x", [], public_key=weak_rsa_key.public_key())


def test_empty_subject_makes_san_critical(issue: Issue) -> None:
    cert = issue("tls-server", x509.Name([]), [parse_san("dns:x.example.org")])
    assert ext(cert, x509.SubjectAlternativeName).critical
    with pytest.raises(IssuanceError, match="needs a subject name or a subject alternative name"):
        issue("code-signing", x509.Name([]), [])


def test_leaf_validity_is_clipped_to_the_issuer(
    root_cert: x509.Certificate,
    root_signer: LoadedKeySigner,
    other_key: rsa.RSAPrivateKey,
    issue: Issue,
) -> None:
    short_ca = build_ca_certificate(
        subject=parse_subject("CN=Short Lived CA"),
        public_key=other_key.public_key(),
        signer=root_signer,
        issuer_certificate=root_cert,
        days=10,
        path_length=0,
    )
    leaf = issue(
        "tls-server",
        "CN=x",
        [parse_san("dns:x.example.org")],
        issuer_certificate=short_ca,
        signer=LoadedKeySigner(other_key),
    )
    assert leaf.not_valid_after_utc == short_ca.not_valid_after_utc


def test_leaf_with_not_before_in_the_past(issue: Issue) -> None:
    now = dt.datetime(2020, 1, 1, 12, 0, tzinfo=dt.UTC)
    cert = issue("tls-server", "CN=x", [parse_san("dns:x.example.org")], days=30, now=now)
    assert cert.not_valid_before_utc == now - CLOCK_SKEW
    assert cert.not_valid_after_utc == now - CLOCK_SKEW + dt.timedelta(days=30, seconds=-1)


# --- CSRs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_csr(leaf_key: rsa.RSAPrivateKey) -> x509.CertificateSigningRequest:
    sans = [parse_san("dns:www.example.org"), parse_san("ip:192.0.2.1")]
    return make_csr(leaf_key, sans=sans, algorithm=hashes.SHA256())


def test_load_csr_pem_and_der(good_csr: x509.CertificateSigningRequest) -> None:
    pem = good_csr.public_bytes(serialization.Encoding.PEM)
    der = good_csr.public_bytes(serialization.Encoding.DER)
    assert load_csr(pem) == good_csr
    assert load_csr(b"some text before\n" + pem) == good_csr
    assert load_csr(der) == good_csr
    assert [format_san(n) for n in csr_requested_sans(load_csr(der))] == [
        "dns:www.example.org",
        "ip:192.0.2.1",
    ]


def test_load_csr_ec_and_no_sans(ec_key: ec.EllipticCurvePrivateKey) -> None:
    csr = load_csr(
        make_csr(ec_key, algorithm=hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    assert describe_public_key(csr.public_key()) == "EC P-256"
    assert csr_requested_sans(csr) == []


def test_csr_garbage(good_csr: x509.CertificateSigningRequest) -> None:
    with pytest.raises(CSRError, match=r"expected PEM .* or DER"):
        load_csr(b"hello, I am not a CSR")
    with pytest.raises(CSRError, match="the CSR is empty"):
        load_csr(b"  \n")
    with pytest.raises(CSRError, match="DER but not a valid certificate signing request"):
        load_csr(b"\x30\x03\x02\x01\x01")
    pem = good_csr.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRError, match="no matching -----END CERTIFICATE REQUEST-----"):
        load_csr(pem[:-40])
    damaged = pem.replace(pem[100:110], b"AAAAAAAAAA")
    with pytest.raises(CSRError, match="PEM block is damaged"):
        load_csr(damaged)


def test_csr_truncated_der(good_csr: x509.CertificateSigningRequest) -> None:
    der = good_csr.public_bytes(serialization.Encoding.DER)
    with pytest.raises(
        CSRError,
        match=rf"truncated: its header announces {len(der)} bytes but only {len(der) // 2} are present",
    ):
        load_csr(der[: len(der) // 2])


def test_csr_with_bad_signature(good_csr: x509.CertificateSigningRequest) -> None:
    der = bytearray(good_csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature BIT STRING
    with pytest.raises(CSRError, match="signature does not verify"):
        load_csr(bytes(der))


def test_csr_with_small_rsa_key(weak_rsa_key: rsa.RSAPrivateKey) -> None:
    csr = make_csr(weak_rsa_key, algorithm=hashes.SHA256())
    with pytest.raises(
        CSRError, match=r"^the CSR uses a 1024-bit RSA key; at least 2048 bits are required$"
    ):
        load_csr(csr.public_bytes(serialization.Encoding.PEM))


def test_csr_signed_with_sha1(
    leaf_key: rsa.RSAPrivateKey, openssl: OpenSSL, tmp_path: Path
) -> None:
    # cryptography refuses to sign with SHA-1, so let openssl make the CSR.
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = openssl(
        "req",
        "-new",
        "-key",
        key_file,
        "-sha1",
        "-subj",
        "/CN=legacy",
        "-outform",
        "DER",
        "-out",
        tmp_path / "r.der",
    )
    assert out.returncode == 0, out.stderr
    with pytest.raises(CSRError, match="signed with SHA-1, which is no longer accepted"):
        load_csr((tmp_path / "r.der").read_bytes())


def test_csr_with_unsupported_keys() -> None:
    ed = make_csr(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(
        CSRError, match=r"the CSR uses an Ed25519 key; only RSA .* and EC .* keys are accepted"
    ):
        load_csr(ed.public_bytes(serialization.Encoding.DER))
    k1 = make_csr(ec.generate_private_key(ec.SECP256K1()), algorithm=hashes.SHA256())
    with pytest.raises(CSRError, match="EC key on curve secp256k1; only P-256, P-384 and P-521"):
        load_csr(k1.public_bytes(serialization.Encoding.DER))


def test_csr_too_large(good_csr: x509.CertificateSigningRequest) -> None:
    pem = good_csr.public_bytes(serialization.Encoding.PEM)
    data = pem + b"\n" * (CSR_MAX_BYTES + 1 - len(pem))
    with pytest.raises(CSRError, match=r"the CSR is 65,537 bytes; at most 65,536 bytes \(64 KiB\)"):
        load_csr(data)


def test_csr_pem_of_wrong_kind(root_cert: x509.Certificate, leaf_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(CSRError, match="this is a certificate, not a certificate signing request"):
        load_csr(certificate_to_pem(root_cert))
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CSRError, match="this is a private key"):
        load_csr(key_pem)


# --- PKCS#12 -------------------------------------------------------------------------------


def test_pkcs12_opens_with_openssl_and_cryptography(
    issue: Issue,
    leaf_key: rsa.RSAPrivateKey,
    intermediate_cert: x509.Certificate,
    root_cert: x509.Certificate,
    openssl: OpenSSL,
    tmp_path: Path,
) -> None:
    cert = issue("tls-client", "CN=alice", [parse_san("email:alice@example.org")])
    data = generate_pkcs12(
        private_key=leaf_key,
        certificate=cert,
        chain=[intermediate_cert, root_cert],
        password=b"s3cret-pass",
        friendly_name=b"alice",
    )
    p12 = tmp_path / "alice.p12"
    p12.write_bytes(data)
    out = openssl("pkcs12", "-in", p12, "-info", "-passin", "pass:s3cret-pass", "-noenc")
    assert out.returncode == 0, out.stderr
    assert "BEGIN PRIVATE KEY" in out.stdout
    assert out.stdout.count("BEGIN CERTIFICATE") == 3
    assert "friendlyName: alice" in out.stdout
    wrong = openssl("pkcs12", "-in", p12, "-info", "-passin", "pass:wrong-pass", "-noenc")
    assert wrong.returncode != 0

    loaded = pkcs12.load_pkcs12(data, b"s3cret-pass")
    assert loaded.key is not None
    assert loaded.key.private_numbers() == leaf_key.private_numbers()  # type: ignore[union-attr]
    assert loaded.cert is not None and loaded.cert.certificate == cert
    assert loaded.cert.friendly_name == b"alice"
    assert [c.certificate for c in loaded.additional_certs] == [intermediate_cert, root_cert]


def test_pkcs12_refusals(
    issue: Issue, leaf_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    cert = issue("tls-client", "CN=alice", [])
    with pytest.raises(ExportError, match="the password is too short; use at least 8 characters"):
        generate_pkcs12(
            private_key=leaf_key,
            certificate=cert,
            chain=[],
            password=b"1234567",
            friendly_name=b"a",
        )
    with pytest.raises(ExportError, match="does not belong to the certificate"):
        generate_pkcs12(
            private_key=other_key,
            certificate=cert,
            chain=[],
            password=b"12345678",
            friendly_name=b"a",
        )


# --- loading and describing ----------------------------------------------------------------


def test_describe_certificate(issue: Issue, intermediate_cert: x509.Certificate) -> None:
    cert = issue(
        "tls-server",
        "CN=www.example.org,O=Example Org",
        [parse_san("dns:www.example.org"), parse_san("ip:2001:db8::1")],
    )
    summary = describe_certificate(cert)
    assert summary.subject == "CN=www.example.org,O=Example Org"
    assert summary.issuer == "CN=Example Issuing CA,O=Example Org,C=DE"
    assert int(summary.serial_number, 16) == cert.serial_number
    assert (
        summary.serial_number == summary.serial_number.upper() and ":" not in summary.serial_number
    )
    assert summary.not_before.tzinfo is not None and summary.not_before == cert.not_valid_before_utc
    assert summary.public_key == "RSA 2048"
    assert summary.signature_algorithm == "RSA with SHA-256"
    assert summary.subject_alternative_names == ("dns:www.example.org", "ip:2001:db8::1")
    assert summary.key_usage == ("digitalSignature", "keyEncipherment")
    assert summary.extended_key_usage == ("serverAuth",)
    assert summary.basic_constraints == "CA:FALSE" and not summary.is_ca
    assert summary.sha256_fingerprint == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(summary.sha1_fingerprint) == 59
    assert describe_certificate(intermediate_cert).basic_constraints == "CA:TRUE, pathlen:0"
    assert describe_certificate(intermediate_cert).key_usage == (
        "digitalSignature",
        "keyCertSign",
        "cRLSign",
    )


def test_load_certificate_pem_and_der(root_cert: x509.Certificate) -> None:
    assert load_certificate(certificate_to_pem(root_cert)) == root_cert
    assert load_certificate(certificate_to_der(root_cert)) == root_cert


def test_load_certificate_errors(
    root_cert: x509.Certificate, good_csr: x509.CertificateSigningRequest
) -> None:
    der = certificate_to_der(root_cert)
    with pytest.raises(CertificateLoadError, match="the certificate is empty"):
        load_certificate(b"")
    with pytest.raises(CertificateLoadError, match=r"expected PEM .* or DER"):
        load_certificate(b"garbage")
    with pytest.raises(CertificateLoadError, match="truncated"):
        load_certificate(der[:100])
    with pytest.raises(CertificateLoadError, match="this is a certificate signing request"):
        load_certificate(good_csr.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertificateLoadError, match="at most 65,536 bytes"):
        load_certificate(b"\x30" * 70000)


def test_load_certificates_bundle(
    root_cert: x509.Certificate, intermediate_cert: x509.Certificate, leaf_key: rsa.RSAPrivateKey
) -> None:
    bundle = certificate_to_pem(intermediate_cert) + b"\n" + certificate_to_pem(root_cert)
    assert load_certificates(bundle) == [intermediate_cert, root_cert]
    assert load_certificates(certificate_to_der(root_cert)) == [root_cert]
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertificateLoadError, match="block 2 of the bundle: this is a private key"):
        load_certificates(certificate_to_pem(root_cert) + key_pem)
    with pytest.raises(
        CertificateLoadError,
        match="block 2 of the bundle is incomplete: no matching -----END CERTIFICATE----- line",
    ):
        load_certificates(bundle[:-30])
    # Thousands of unterminated BEGIN lines are rejected quickly (no regex backtracking).
    with pytest.raises(CertificateLoadError, match="incomplete"):
        load_certificates(b"-----BEGIN CERTIFICATE-----\n" * 30000)


def test_extended_key_usage_oids_in_profiles() -> None:
    assert PROFILES["ocsp-responder"].extended_key_usage == (ExtendedKeyUsageOID.OCSP_SIGNING,)
    assert PROFILES["code-signing"].allowed_san_types == frozenset()


@pytest.fixture
def restore_tls_server_days() -> object:
    yield
    configure_tls_server_days(TLS_SERVER_DEFAULT_DAYS)


def test_the_tls_server_maximum_is_configurable_from_1_to_398_days(
    issue: Issue, restore_tls_server_days: object
) -> None:
    assert TLS_SERVER_DEFAULT_DAYS == 200
    configure_tls_server_days(90)
    assert PROFILES["tls-server"].max_validity_days == 90
    with pytest.raises(
        IssuanceError, match="tls-server profile allows at most 90 days; 91 days were requested"
    ):
        issue("tls-server", "CN=x", [parse_san("dns:x.example.org")], days=91)
    cert = issue("tls-server", "CN=x", [parse_san("dns:x.example.org")], days=90)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(
        days=90
    ) - dt.timedelta(seconds=1)
    for edge in (1, 398):
        configure_tls_server_days(edge)
        assert PROFILES["tls-server"].max_validity_days == edge
    for wrong in (0, 399, -5, True, "90", 90.0):
        with pytest.raises(
            ValueError, match=r"the tls-server maximum validity must be 1 to 398 days, not "
        ):
            configure_tls_server_days(wrong)  # type: ignore[arg-type]
        assert PROFILES["tls-server"].max_validity_days == 398  # unchanged by a refusal
