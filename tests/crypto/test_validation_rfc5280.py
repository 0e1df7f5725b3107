"""RFC 5280 section 6.1 in the validator's own code, for every purpose; backtracking; and the
crash cases of issue 18 (the validator answers with a report, never an exception)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmsportal.crypto.validation import (
    CHECK_NAMES,
    ValidationReport,
    validate_certificate,
    validate_certificate_data,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def keys() -> dict[str, object]:
    return {
        "root": ec.generate_private_key(ec.SECP256R1()),
        "inter": ec.generate_private_key(ec.SECP256R1()),
        "leaf": ec.generate_private_key(ec.SECP256R1()),
        "other": ec.generate_private_key(ec.SECP256R1()),
        "rsa_root": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def make(
    subject: str | x509.Name,
    key: object,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: object = None,
    ca: bool = False,
    path_length: int | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    sans: list[x509.GeneralName] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    subject_name = name(subject) if isinstance(subject, str) else subject
    public = key.public_key()  # type: ignore[attr-defined]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer.subject if issuer is not None else subject_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    signing_key = issuer_key if issuer is not None else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),  # type: ignore[attr-defined]
        critical=False,
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                eku or [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = hash_algorithm
    if algorithm is None and not isinstance(signing_key, dsa.DSAPrivateKey):
        algorithm = hashes.SHA256()
    return builder.sign(signing_key, algorithm or hashes.SHA256())  # type: ignore[arg-type]


def dns(value: str) -> x509.DNSName:
    return x509.DNSName(value)


@pytest.fixture(scope="module")
def root(keys: dict) -> x509.Certificate:
    return make("Root", keys["root"], ca=True)


def chain_with(
    keys: dict,
    root: x509.Certificate,
    *,
    inter_extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    leaf_sans: list[x509.GeneralName] | None = None,
    leaf_subject: str | x509.Name = "leaf.example.com",
    leaf_extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
) -> tuple[x509.Certificate, x509.Certificate]:
    inter = make(
        "Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True,
        extensions=inter_extensions,
    )  # fmt: skip
    leaf = make(
        leaf_subject,
        keys["leaf"],
        issuer=inter,
        issuer_key=keys["inter"],
        sans=leaf_sans if leaf_sans is not None else [dns("leaf.example.com")],
        extensions=leaf_extensions,
    )
    return inter, leaf


def run(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    purpose: str = "any",
    **kwargs: object,
) -> ValidationReport:
    return validate_certificate(
        leaf=leaf,
        intermediates=intermediates,
        trust_roots=roots,
        purpose=purpose,  # type: ignore[arg-type]
        hostname=kwargs.pop("hostname", None),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def failed(report: ValidationReport) -> list[str]:
    return [c.name for c in report.failed]


PURPOSES = ["any", "server", "client"]


# --- name constraints, every type, every purpose --------------------------------------------


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize(
    ("constraints", "sans", "subject", "ok"),
    [
        # DNS: permitted and excluded, subdomains included
        (x509.NameConstraints([dns("example.com")], None), [dns("a.example.com")], None, True),
        (x509.NameConstraints([dns("example.com")], None), [dns("a.example.org")], None, False),
        (x509.NameConstraints(None, [dns("bad.example.com")]), [dns("x.bad.example.com")],
         None, False),
        (x509.NameConstraints(None, [dns("bad.example.com")]), [dns("*.example.com")], None,
         False),
        # IP
        (x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], None),
         [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))], None, True),
        (x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], None),
         [x509.IPAddress(ipaddress.ip_address("192.0.2.1"))], None, False),
        (x509.NameConstraints(None, [x509.IPAddress(ipaddress.ip_network("192.0.2.0/24"))]),
         [x509.IPAddress(ipaddress.ip_address("192.0.2.1"))], None, False),
        # email (SAN and the subject's emailAddress)
        (x509.NameConstraints([x509.RFC822Name("example.com")], None),
         [x509.RFC822Name("alice@example.com")], None, True),
        (x509.NameConstraints([x509.RFC822Name("example.com")], None),
         [x509.RFC822Name("alice@evil.com")], None, False),
        (x509.NameConstraints(None, [x509.RFC822Name(".example.com")]), [],
         x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a"),
                    x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@mail.example.com")]), False),
        # URI (its host)
        (x509.NameConstraints([x509.UniformResourceIdentifier(".example.com")], None),
         [x509.UniformResourceIdentifier("https://api.example.com/x")], None, True),
        (x509.NameConstraints(None, [x509.UniformResourceIdentifier("evil.com")]),
         [x509.UniformResourceIdentifier("https://evil.com/")], None, False),
        # DN
        (x509.NameConstraints([x509.DirectoryName(x509.Name([x509.NameAttribute(
            NameOID.ORGANIZATION_NAME, "Good")]))], None), [dns("leaf.example.com")],
         x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Good"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]), True),
        (x509.NameConstraints(None, [x509.DirectoryName(x509.Name([x509.NameAttribute(
            NameOID.ORGANIZATION_NAME, "Bad")]))]), [dns("leaf.example.com")],
         x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bad"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]), False),
    ],
)  # fmt: skip
def test_name_constraints_for_every_type_and_purpose(
    keys: dict, root: x509.Certificate, purpose: str, constraints, sans, subject, ok: bool
) -> None:
    inter, leaf = chain_with(
        keys,
        root,
        inter_extensions=[(constraints, True)],
        leaf_sans=sans,
        leaf_subject=subject if subject is not None else "leaf",
    )
    report = run(leaf, [inter], [root], purpose)
    assert report.check("name constraints").passed is ok, report.check("name constraints")
    assert report.ok is ok, report.checks
    if not ok:
        assert "name constraints" in failed(report)


# --- unknown critical extensions, weak algorithms, for every purpose ------------------------


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("where", ["root", "intermediate", "leaf"])
def test_unknown_critical_extension_is_refused(keys: dict, purpose: str, where: str) -> None:
    unknown = [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                           b"\x05\x00"), True)]  # fmt: skip
    root = make("Root", keys["root"], ca=True, extensions=unknown if where == "root" else [])
    inter, leaf = chain_with(
        keys,
        root,
        inter_extensions=unknown if where == "intermediate" else [],
        leaf_extensions=unknown if where == "leaf" else [],
    )
    report = run(leaf, [inter], [root], purpose)
    assert "critical extensions" in failed(report)
    assert "1.3.6.1.4.1.99999.1" in report.check("critical extensions").detail
    assert not report.ok


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("weak", ["rsa1024", "dsa", "p192"])
def test_weak_root_keys_are_refused(purpose: str, weak: str, keys: dict) -> None:
    if weak == "rsa1024":
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    elif weak == "dsa":
        root_key = dsa.generate_private_key(key_size=2048)
    else:
        root_key = ec.generate_private_key(ec.SECP192R1())
    root = make("Weak Root", root_key, ca=True)
    inter = make("Issuing", keys["inter"], issuer=root, issuer_key=root_key, ca=True)
    leaf = make("leaf", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [inter], [root], purpose)
    assert "algorithms" in failed(report), report.checks
    assert "Weak Root" in report.check("algorithms").detail
    assert not report.ok


@pytest.mark.parametrize("purpose", PURPOSES)
def test_sha1_signature_is_refused(purpose: str, keys: dict) -> None:
    root = make("RSA Root", keys["rsa_root"], ca=True)
    inter = sha1_intermediate(keys, root)
    leaf = make("leaf", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [inter], [root], purpose)
    assert "algorithms" in failed(report)
    assert "sha1" in report.check("algorithms").detail.lower()


@pytest.mark.parametrize("purpose", PURPOSES)
def test_path_length_and_ca_flag_for_every_purpose(purpose: str, keys: dict) -> None:
    root = make("Root", keys["root"], ca=True, path_length=0)
    inter, leaf = chain_with(keys, root)
    report = run(leaf, [inter], [root], purpose)
    assert "basic constraints" in failed(report)
    not_ca = make("Not a CA", keys["inter"], issuer=root, issuer_key=keys["root"], ca=False)
    leaf2 = make("leaf", keys["leaf"], issuer=not_ca, issuer_key=keys["inter"])
    report = run(leaf2, [not_ca], [root], purpose)
    assert "basic constraints" in failed(report)


def test_client_leaf_without_san_is_checked_fully(keys: dict, root: x509.Certificate) -> None:
    """Issue 18: with purpose client and a SAN-less leaf the cross-check cannot run; the
    validator's own rules still refuse an excluded subject."""
    excluded = x509.NameConstraints(
        None, [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "X")]))]
    )
    inter, leaf = chain_with(
        keys,
        root,
        inter_extensions=[(excluded, True)],
        leaf_sans=[],
        leaf_subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "X"),
                x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
            ]
        ),
    )
    report = run(leaf, [inter], [root], "client")
    assert not report.cross_checked
    assert failed(report) == ["name constraints"]


# --- backtracking ----------------------------------------------------------------------------


def test_expired_old_copy_of_the_intermediate_listed_first(
    keys: dict, root: x509.Certificate
) -> None:
    old = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True,
               not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=10))  # fmt: skip
    current = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True)
    leaf = make("leaf", keys["leaf"], issuer=current, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [old, current], [root], "server", hostname="leaf.example.com")
    assert report.ok, report.checks
    assert report.path[1] == current


def test_cross_signed_copy_listed_first(keys: dict, root: x509.Certificate) -> None:
    other_root = make("Other Root", keys["other"], ca=True)
    cross = make("Issuing", keys["inter"], issuer=other_root, issuer_key=keys["other"], ca=True)
    current = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True)
    leaf = make("leaf", keys["leaf"], issuer=current, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [cross, other_root, current], [root], "server",
                 hostname="leaf.example.com")  # fmt: skip
    assert report.ok, report.checks
    assert report.path == [leaf, current, root]
    # Trusting only the other root, the cross-signed path is the valid one.
    report = run(leaf, [current, cross], [other_root], "any")
    assert report.ok, report.checks
    assert report.path == [leaf, cross, other_root]


def test_every_path_tried_is_reported_when_none_is_valid(keys: dict) -> None:
    root = make("RSA Root", keys["rsa_root"], ca=True)
    old = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["rsa_root"], ca=True,
               not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=10))  # fmt: skip
    sha1 = sha1_intermediate(keys, root)
    leaf = make("leaf", keys["leaf"], issuer=old, issuer_key=keys["inter"])
    report = run(leaf, [old, sha1], [root], "any")
    assert not report.ok
    assert len(report.paths_tried) == 2
    detail = report.check("path").detail
    assert "no valid path among 2 tried" in detail
    assert "expired" in detail and "sha1" in detail.lower()


def test_path_search_is_bounded(keys: dict, root: x509.Certificate) -> None:
    """Many same-name CAs cross-signing each other: the search ends, with an answer."""
    many = [make("Loop", ec.generate_private_key(ec.SECP256R1()), ca=True) for _ in range(12)]
    signed = []
    for issuer_index, issuer in enumerate(many[:6]):
        for subject_index in range(6):
            if subject_index != issuer_index:
                signed.append(make("Loop", ec.generate_private_key(ec.SECP256R1()),
                                   issuer=issuer, issuer_key=keys["other"], ca=True))  # fmt: skip
    leaf = make("leaf", keys["leaf"], issuer=many[0], issuer_key=keys["other"])
    report = run(leaf, [*many, *signed], [root], "any")
    assert not report.ok
    assert report.check("path").passed is False


# --- the crash cases: a report, never an exception --------------------------------------------


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def forge(
    cert: x509.Certificate,
    key: object,
    replacements: list[tuple[bytes, bytes]],
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """Re-sign ``cert`` after same-length byte replacements in its TBS (what a builder would
    refuse to make): returns DER."""
    tbs = cert.tbs_certificate_bytes
    for old, new in replacements:
        assert len(old) == len(new) and old in tbs
        tbs = tbs.replace(old, new)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hash_algorithm or hashes.SHA256())
    else:
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    der = cert.public_bytes(serialization.Encoding.DER)
    # signatureAlgorithm: the element after the TBS in the outer SEQUENCE.
    outer_header = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    old_tbs_len = len(cert.tbs_certificate_bytes)
    rest = der[outer_header + old_tbs_len :]
    algorithm_len = 2 + rest[1]
    algorithm = rest[:algorithm_len]
    for old, new in replacements:
        algorithm = algorithm.replace(old, new)
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


PLACEHOLDER = x509.ObjectIdentifier("2.5.29.99")  # encodes as 06 03 55 1d 63
SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
SHA1_RSA = bytes.fromhex("06092a864886f70d010105")


def sha1_intermediate(keys: dict, root: x509.Certificate, **kwargs: object) -> x509.Certificate:
    """An intermediate signed with sha1WithRSAEncryption (cryptography refuses to make one)."""
    made = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["rsa_root"], ca=True,
                **kwargs)  # type: ignore[arg-type]  # fmt: skip
    der = forge(made, keys["rsa_root"], [(SHA256_RSA, SHA1_RSA)], hashes.SHA1())  # noqa: S303
    return x509.load_der_x509_certificate(der)


def test_duplicate_extension_gives_a_report(keys: dict, root: x509.Certificate) -> None:
    inter = make("Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True)
    leaf = make(
        "dup", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
        extensions=[(x509.UnrecognizedExtension(PLACEHOLDER, b"\x30\x00"), False)],
    )  # fmt: skip
    # 2.5.29.99 becomes 2.5.29.19 (basicConstraints): the leaf has it twice.
    der = forge(leaf, keys["inter"], [(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x13")])
    report, loaded = validate_certificate_data(
        certificate=der, trust_roots=[root], extra_intermediates=[inter], purpose="server",
        hostname="dup.example",
    )  # fmt: skip
    assert loaded is not None
    assert not report.ok
    assert "critical extensions" in failed(report)
    assert "duplicate" in report.check("critical extensions").detail.lower()
    assert [c.name for c in report.checks] == list(CHECK_NAMES)


def test_invalid_ip_in_name_constraints_gives_a_report(keys: dict, root: x509.Certificate) -> None:
    # A NameConstraints value whose permitted IP subtree is 5 octets long (neither v4 nor v6).
    bad_value = _tlv(0x30, _tlv(0xA0, _tlv(0x30, _tlv(0x87, b"\x0a\x00\x00\x00\xff"))))
    inter = make(
        "Issuing", keys["inter"], issuer=root, issuer_key=keys["root"], ca=True,
        extensions=[(x509.UnrecognizedExtension(PLACEHOLDER, bad_value), True)],
    )  # fmt: skip
    forged = x509.load_der_x509_certificate(
        forge(inter, keys["root"], [(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x1e")])
    )
    leaf = make("leaf", keys["leaf"], issuer=forged, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    for purpose in PURPOSES:
        report = run(leaf, [forged], [root], purpose, hostname="leaf.example.com")
        assert not report.ok
        assert "name constraints" in failed(report)
        assert "cannot be read" in report.check("name constraints").detail


@pytest.mark.parametrize(
    "hostname",
    ["under_score.example.com", "_srv.example.com", "a..b", "*.x", "\udcff", "x" * 2000, "",
     "[::1", "ünïcödé.example", "xn--zz.example", 42],
)  # fmt: skip
def test_any_hostname_gives_a_report(keys: dict, root: x509.Certificate, hostname: object) -> None:
    inter, leaf = chain_with(keys, root, leaf_sans=[dns("under_score.example.com")])
    for purpose in PURPOSES:
        report = run(leaf, [inter], [root], purpose, hostname=hostname)
        assert [c.name for c in report.checks] == list(CHECK_NAMES)
        if hostname == "under_score.example.com":
            assert report.check("hostname").passed is True


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE-----\nAA\n", b"\x00" * 50],
)
def test_any_bytes_give_a_report(root: x509.Certificate, data: bytes) -> None:
    report, leaf = validate_certificate_data(certificate=data, trust_roots=[root])
    assert leaf is None
    assert not report.ok
    assert report.check("decoding").passed is False
    assert report.check("decoding").detail


def test_revocation_source_that_raises_is_reported(keys: dict, root: x509.Certificate) -> None:
    inter, leaf = chain_with(keys, root)

    def broken(cert: x509.Certificate) -> None:
        raise RuntimeError("the responder is down")

    report = run(leaf, [inter], [root], "any", is_revoked=broken)
    assert report.check("revocation").passed is None
    assert "the responder is down" in report.check("revocation").detail
    strict = run(leaf, [inter], [root], "any", is_revoked=broken, revocation_required=True)
    assert strict.check("revocation").passed is False and not strict.ok


def test_good_chain_passes_for_every_purpose(keys: dict, root: x509.Certificate) -> None:
    inter, leaf = chain_with(keys, root)
    for purpose in PURPOSES:
        report = run(leaf, [inter], [root], purpose, hostname="leaf.example.com")
        assert report.ok, (purpose, report.checks)


ValidateFn = Callable[..., ValidationReport]


# --- CA usage rules, explicit policy and the depth bound ---------------------------------------


def ca_with(
    keys: dict, root: x509.Certificate, extensions: list[tuple[x509.ExtensionType, bool]]
) -> x509.Certificate:
    """An intermediate built by hand (``make`` always gives a CA keyCertSign)."""
    public = keys["inter"].public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("Issuing"))
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(keys["root"].public_key()),
            critical=False,
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(keys["root"], hashes.SHA256())


CA_KEY_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)


@pytest.mark.parametrize("purpose", PURPOSES)
def test_an_issuer_without_key_cert_sign_is_refused(
    keys: dict, root: x509.Certificate, purpose: str
) -> None:
    no_cert_sign = x509.KeyUsage(True, False, False, False, False, False, True, False, False)
    inter = ca_with(keys, root, [(no_cert_sign, True)])
    leaf = make("leaf", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [inter], [root], purpose, hostname="leaf.example.com")
    assert not report.ok
    assert failed(report) == ["key usage and EKU"]
    assert (
        "'CN=Issuing' may not sign certificates (no keyCertSign)"
        in report.check("key usage and EKU").detail
    )


def test_an_eku_restricted_ca_may_not_issue_for_another_purpose(
    keys: dict, root: x509.Certificate
) -> None:
    client_only = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    inter = ca_with(keys, root, [(CA_KEY_USAGE, True), (client_only, False)])
    leaf = make("leaf", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    server = run(leaf, [inter], [root], "server", hostname="leaf.example.com")
    assert not server.ok
    assert failed(server) == ["key usage and EKU"]
    assert (
        "'CN=Issuing' is restricted to clientAuth and may not issue serverAuth certificates"
        in server.check("key usage and EKU").detail
    ), server.check("key usage and EKU").detail
    # The purpose the CA is restricted to, and "any", pass.
    assert run(leaf, [inter], [root], "client", hostname="leaf.example.com").ok
    assert run(leaf, [inter], [root], "any").ok


@pytest.mark.parametrize("purpose", PURPOSES)
def test_a_path_that_requires_an_explicit_policy_is_refused(
    keys: dict, root: x509.Certificate, purpose: str
) -> None:
    policy = x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None)
    inter = ca_with(keys, root, [(CA_KEY_USAGE, True), (policy, True)])
    leaf = make("leaf", keys["leaf"], issuer=inter, issuer_key=keys["inter"],
                sans=[dns("leaf.example.com")])  # fmt: skip
    report = run(leaf, [inter], [root], purpose, hostname="leaf.example.com")
    assert not report.ok
    assert failed(report) == ["critical extensions"]
    assert (
        "'CN=Issuing' requires an explicit certificate policy; this validator does not process "
        "certificate policies, so it cannot accept the path"
    ) in report.check("critical extensions").detail


def chain_of(
    keys: dict, intermediates: int
) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    """root -> ``intermediates`` CAs -> leaf, each CA with its own name."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    top = make("Deep Root", root_key, ca=True)
    issuer, issuer_key = top, root_key
    cas = []
    for number in range(intermediates):
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = make(f"Deep CA {number}", key, issuer=issuer, issuer_key=issuer_key, ca=True)
        issuer_key = key
        cas.append(issuer)
    leaf = make("leaf", keys["leaf"], issuer=issuer, issuer_key=issuer_key)
    return top, cas, leaf


def test_a_path_of_ten_certificates_is_accepted_and_eleven_are_refused(keys: dict) -> None:
    top, cas, leaf = chain_of(keys, 8)  # leaf + 8 + root = 10
    report = run(leaf, cas, [top], "any")
    assert report.ok, report.checks
    assert len(report.path) == 10

    top, cas, leaf = chain_of(keys, 9)  # leaf + 9 + root = 11
    report = run(leaf, cas, [top], "any")
    assert not report.ok
    assert report.check("path").passed is False
    assert report.check("path").detail == "no trust root was reached within 10 certificates"


def test_candidates_valid_at_the_validation_time_are_tried_first(keys: dict) -> None:
    """Validating as of 200 days ago: the copy of the intermediate valid then is tried
    first, not the one valid today (the order follows ``now``, not the clock)."""
    then = NOW - dt.timedelta(days=200)
    top = make("Old Root", keys["root"], ca=True, not_before=NOW - dt.timedelta(days=500))
    old = make("Issuing", keys["inter"], issuer=top, issuer_key=keys["root"], ca=True,
               not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=10))  # fmt: skip
    current = make("Issuing", keys["inter"], issuer=top, issuer_key=keys["root"], ca=True)
    leaf = make("leaf", keys["leaf"], issuer=old, issuer_key=keys["inter"],
                not_before=NOW - dt.timedelta(days=300), not_after=NOW - dt.timedelta(days=100))  # fmt: skip
    report = run(leaf, [current, old], [top], "any", now=then)
    assert report.ok, report.checks
    assert report.path == [leaf, old, top]
    assert report.paths_tried == []
