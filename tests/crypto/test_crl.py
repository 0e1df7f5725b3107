"""Tests for kmsportal.crypto.crl: CRLs that OpenSSL accepts, and the errors we raise.

The small CA hierarchy below is built with `cryptography` directly (no database) and is also
used by tests/crypto/test_ocsp.py through :func:`build_pki`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmsportal.crypto.crl import (
    CRLEntry,
    CRLError,
    RevocationReason,
    RevokedInfo,
    build_crl,
    crl_is_fresh,
    crl_summary,
    crl_to_der,
    crl_to_pem,
    load_crl,
    revoked_serials,
    verify_crl_signature,
)
from kmsportal.crypto.signer import LoadedKeySigner

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)

# --- a small CA hierarchy -------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kmsportal tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    *,
    subject: str,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    serial: int,
    ca: bool = False,
    ocsp_responder: bool = False,
) -> x509.Certificate:
    """A certificate with the extensions OpenSSL's chain and CRL checks look at."""
    subject_name = _name(subject)
    issuer_name = issuer.subject if issuer is not None else subject_name
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    issuer_ski = (
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if issuer is not None
        else ski
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if ocsp_responder:
        # RFC 6960 §4.2.2.2 (delegation) and §4.2.2.2.1 (id-pkix-ocsp-nocheck).
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        ).add_extension(x509.OCSPNoCheck(), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class PKI:
    """Root (RSA-2048) → intermediate (P-256); leaves and an OCSP responder (P-256)."""

    directory: Path
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    good_leaf: x509.Certificate  # issued by the root, never revoked
    revoked_leaf: x509.Certificate  # issued by the root, revoked in the tests
    intermediate_good_leaf: x509.Certificate
    intermediate_revoked_leaf: x509.Certificate
    responder_key: ec.EllipticCurvePrivateKey
    responder: x509.Certificate  # delegated OCSP responder issued by the root

    @property
    def root_signer(self) -> LoadedKeySigner:
        return LoadedKeySigner(self.root_key)

    @property
    def intermediate_signer(self) -> LoadedKeySigner:
        return LoadedKeySigner(self.intermediate_key)

    def path(self, name: str) -> str:
        return str(self.directory / name)


def write_pem(path: Path, *items: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items))
    return path


def build_pki(directory: Path) -> PKI:
    """Generate the hierarchy and write every certificate as ``<name>.pem`` in ``directory``."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = issue(
        subject="Test Root CA",
        public_key=root_key.public_key(),
        issuer=None,
        issuer_key=root_key,
        serial=0x1000,
        ca=True,
    )
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = issue(
        subject="Test Intermediate CA",
        public_key=intermediate_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        serial=0x2000,
        ca=True,
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())  # leaves may share a key in tests
    responder_key = ec.generate_private_key(ec.SECP256R1())

    def leaf(subject: str, issuer: x509.Certificate, key: object, serial: int) -> x509.Certificate:
        return issue(
            subject=subject,
            public_key=leaf_key.public_key(),
            issuer=issuer,
            issuer_key=key,  # type: ignore[arg-type]
            serial=serial,
        )

    pki = PKI(
        directory=directory,
        root_key=root_key,
        root=root,
        intermediate_key=intermediate_key,
        intermediate=intermediate,
        good_leaf=leaf("good.example", root, root_key, 0x0A11CE),
        revoked_leaf=leaf("revoked.example", root, root_key, 0xBAD1),
        intermediate_good_leaf=leaf("inter-good.example", intermediate, intermediate_key, 0x600D),
        intermediate_revoked_leaf=leaf(
            "inter-revoked.example", intermediate, intermediate_key, 0xBAD2
        ),
        responder_key=responder_key,
        responder=issue(
            subject="Test Root OCSP Responder",
            public_key=responder_key.public_key(),
            issuer=root,
            issuer_key=root_key,
            serial=0x0C5B,
            ocsp_responder=True,
        ),
    )
    for name in (
        "root",
        "intermediate",
        "good_leaf",
        "revoked_leaf",
        "intermediate_good_leaf",
        "intermediate_revoked_leaf",
        "responder",
    ):
        write_pem(directory / f"{name}.pem", getattr(pki, name))
    return pki


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI; the caller checks the exit code and the combined output."""
    return subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return build_pki(tmp_path_factory.mktemp("crl-pki"))


# --- helpers ----------------------------------------------------------------------------------

INVALID_SINCE = NOW - 3 * DAY


def root_crl(pki: PKI, *, crl_number: int = 7, **kwargs: object) -> x509.CertificateRevocationList:
    """The root's CRL: the revoked leaf (keyCompromise) and two unrelated serials."""
    entries = [
        CRLEntry(pki.revoked_leaf.serial_number, NOW - 2 * DAY, RevocationReason.KEY_COMPROMISE),
        CRLEntry(0x5151, NOW - DAY, RevocationReason.UNSPECIFIED, None),
        CRLEntry(0x7777, NOW - DAY, RevocationReason.SUPERSEDED, INVALID_SINCE),
    ]
    params: dict[str, object] = {
        "issuer_certificate": pki.root,
        "signer": pki.root_signer,
        "entries": entries,
        "crl_number": crl_number,
        "this_update": NOW - DAY,
        "next_update": NOW + 7 * DAY,
    }
    params.update(kwargs)
    return build_crl(**params)  # type: ignore[arg-type]


def entry_blocks(crl_text: str) -> dict[int, str]:
    """`openssl crl -text` output split into one text block per revoked serial number."""
    blocks = re.split(r"\n\s*Serial Number: ", crl_text.split("Revoked Certificates:", 1)[1])
    return {int(block.split()[0], 16): block for block in blocks[1:]}


# --- OpenSSL accepts what we build ------------------------------------------------------------


def test_openssl_verifies_the_crl_signature(pki: PKI) -> None:
    crl_path = write_pem(pki.directory / "sig.crl.pem", root_crl(pki))

    result = openssl(
        "crl", "-in", str(crl_path), "-CAfile", pki.path("root.pem"), "-verify", "-noout",
        cwd=pki.directory,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr


def test_openssl_text_shows_number_reasons_and_invalidity_dates(pki: PKI) -> None:
    crl_path = write_pem(pki.directory / "text.crl.pem", root_crl(pki, crl_number=4242))

    result = openssl("crl", "-in", str(crl_path), "-text", "-noout", cwd=pki.directory)

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert re.search(r"X509v3 CRL Number:\s*\n\s*4242\b", text)
    assert "X509v3 Authority Key Identifier" in text
    blocks = entry_blocks(text)
    assert set(blocks) == {pki.revoked_leaf.serial_number, 0x5151, 0x7777}
    assert "Key Compromise" in blocks[pki.revoked_leaf.serial_number]
    # RFC 5280 §5.3.1: no reasonCode at all for "unspecified".
    assert "CRL Reason Code" not in blocks[0x5151]
    assert "Invalidity Date" not in blocks[0x5151]
    assert "Superseded" in blocks[0x7777]
    assert "Invalidity Date" in blocks[0x7777]
    assert INVALID_SINCE.strftime("%b %e %H:%M:%S %Y") in blocks[0x7777]


def test_openssl_verify_rejects_the_revoked_leaf_and_accepts_the_good_one(pki: PKI) -> None:
    crl_path = write_pem(pki.directory / "verify.crl.pem", root_crl(pki))
    common = ["verify", "-crl_check", "-CAfile", pki.path("root.pem"), "-CRLfile", str(crl_path)]

    revoked = openssl(*common, pki.path("revoked_leaf.pem"), cwd=pki.directory)
    good = openssl(*common, pki.path("good_leaf.pem"), cwd=pki.directory)

    assert revoked.returncode != 0
    assert "error 23" in revoked.stdout + revoked.stderr
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().endswith(": OK")


def test_openssl_checks_the_whole_chain_with_crl_check_all(pki: PKI) -> None:
    intermediate_crl = build_crl(
        issuer_certificate=pki.intermediate,
        signer=pki.intermediate_signer,
        entries=[(pki.intermediate_revoked_leaf.serial_number, NOW - DAY, "superseded", None)],
        crl_number=1,
        this_update=NOW - DAY,
        next_update=NOW + DAY,
    )
    crls = write_pem(pki.directory / "chain.crl.pem", root_crl(pki), intermediate_crl)
    common = [
        "verify", "-crl_check_all", "-CAfile", pki.path("root.pem"),
        "-untrusted", pki.path("intermediate.pem"), "-CRLfile", str(crls),
    ]  # fmt: skip

    good = openssl(*common, pki.path("intermediate_good_leaf.pem"), cwd=pki.directory)
    revoked = openssl(*common, pki.path("intermediate_revoked_leaf.pem"), cwd=pki.directory)
    # Without the intermediate's CRL the chain cannot be fully checked (error 3).
    root_only = write_pem(pki.directory / "root-only.crl.pem", root_crl(pki))
    missing = openssl(
        "verify", "-crl_check_all", "-CAfile", pki.path("root.pem"),
        "-untrusted", pki.path("intermediate.pem"), "-CRLfile", str(root_only),
        pki.path("intermediate_good_leaf.pem"), cwd=pki.directory,
    )  # fmt: skip

    assert good.returncode == 0, good.stdout + good.stderr
    assert revoked.returncode != 0
    assert "error 23" in revoked.stdout + revoked.stderr
    assert missing.returncode != 0
    assert "unable to get certificate CRL" in missing.stdout + missing.stderr


def test_openssl_rejects_an_expired_crl(pki: PKI) -> None:
    expired = root_crl(pki, this_update=NOW - 10 * DAY, next_update=NOW - DAY)
    crl_path = write_pem(pki.directory / "expired.crl.pem", expired)

    result = openssl(
        "verify", "-crl_check", "-CAfile", pki.path("root.pem"), "-CRLfile", str(crl_path),
        pki.path("good_leaf.pem"), cwd=pki.directory,
    )  # fmt: skip

    assert result.returncode != 0
    assert "error 12" in result.stdout + result.stderr
    assert "CRL has expired" in result.stdout + result.stderr
    assert not crl_is_fresh(expired, NOW)


# --- building -------------------------------------------------------------------------------


def test_ten_thousand_entries_from_plain_tuples(pki: PKI) -> None:
    """The Django side passes ``values_list`` rows; they go through the one-list path."""
    reasons = [None, "keyCompromise", RevocationReason.SUPERSEDED, "unspecified"]
    rows = [
        (1000 + i, NOW - DAY, reasons[i % 4], INVALID_SINCE if i % 5 == 0 else None)
        for i in range(10_000)
    ]

    crl = build_crl(
        issuer_certificate=pki.root,
        signer=pki.root_signer,
        entries=iter(rows),  # any iterable, consumed once
        crl_number=1,
        this_update=NOW,
        next_update=NOW + DAY,
    )

    assert len(crl) == 10_000
    revoked = revoked_serials(load_crl(crl_to_der(crl)))
    assert len(revoked) == 10_000
    assert revoked[1000] == RevokedInfo(NOW - DAY, RevocationReason.UNSPECIFIED, INVALID_SINCE)
    assert revoked[1001] == RevokedInfo(NOW - DAY, RevocationReason.KEY_COMPROMISE, None)
    assert revoked[1002].reason is RevocationReason.SUPERSEDED
    assert revoked[1003].reason is RevocationReason.UNSPECIFIED
    assert 999 not in revoked
    assert verify_crl_signature(crl, pki.root)


def test_an_empty_crl_is_valid(pki: PKI) -> None:
    crl = build_crl(
        issuer_certificate=pki.intermediate,
        signer=pki.intermediate_signer,
        entries=[],
        crl_number=0,
        this_update=NOW,
        next_update=NOW + DAY,
    )

    assert len(crl) == 0
    assert crl_summary(crl).crl_number == 0
    assert verify_crl_signature(crl, pki.intermediate)
    assert revoked_serials(crl) == {}


def test_crl_structure_and_summary(pki: PKI) -> None:
    crl = root_crl(pki, crl_number=12)
    ski = pki.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    summary = crl_summary(crl)

    assert crl.issuer == pki.root.subject
    assert summary.issuer == pki.root.subject.rfc4514_string()
    assert summary.crl_number == 12
    assert summary.this_update == NOW - DAY
    assert summary.next_update == NOW + 7 * DAY
    assert summary.entry_count == 3
    assert summary.authority_key_identifier == ski.digest.hex()
    assert summary.is_delta is False
    assert summary.base_crl_number is None
    assert summary.freshest_crl_urls == ()
    assert summary.signature_algorithm == "sha256WithRSAEncryption"
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert not aki.critical
    assert not number.critical


def test_aki_falls_back_to_the_public_key_when_the_issuer_has_no_ski(pki: PKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bare = (
        x509.CertificateBuilder()
        .subject_name(_name("No SKI CA"))
        .issuer_name(_name("No SKI CA"))
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(key, hashes.SHA256())
    )

    crl = build_crl(
        issuer_certificate=bare,
        signer=LoadedKeySigner(key),
        entries=[],
        crl_number=1,
        this_update=NOW,
        next_update=NOW + DAY,
    )

    expected = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()
    assert crl_summary(crl).authority_key_identifier == expected
    assert crl_summary(crl).signature_algorithm == "ecdsa-with-SHA256"


def test_delta_crl_carries_a_critical_delta_indicator_and_may_remove_from_crl(pki: PKI) -> None:
    delta = build_crl(
        issuer_certificate=pki.root,
        signer=pki.root_signer,
        entries=[
            (0x51, NOW - DAY, "removeFromCRL", None),
            (0x52, NOW - DAY, RevocationReason.CERTIFICATE_HOLD, None),
        ],
        crl_number=9,
        this_update=NOW,
        next_update=NOW + DAY,
        delta_crl_indicator=7,
    )

    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical  # RFC 5280 §5.2.4
    assert indicator.value.crl_number == 7
    summary = crl_summary(delta)
    assert summary.is_delta
    assert summary.base_crl_number == 7
    assert revoked_serials(delta)[0x51].reason is RevocationReason.REMOVE_FROM_CRL
    assert revoked_serials(delta)[0x52].reason is RevocationReason.CERTIFICATE_HOLD
    assert verify_crl_signature(delta, pki.root)


def test_freshest_crl_pointer(pki: PKI) -> None:
    url = "http://testserver/pki/crl/root-delta.crl"

    crl = root_crl(pki, freshest_crl_url=url)

    freshest = crl.extensions.get_extension_for_class(x509.FreshestCRL)
    assert not freshest.critical  # RFC 5280 §5.2.6
    assert crl_summary(crl).freshest_crl_urls == (url,)
    crl_path = write_pem(pki.directory / "freshest.crl.pem", crl)
    result = openssl("crl", "-in", str(crl_path), "-text", "-noout", cwd=pki.directory)
    assert "Freshest CRL" in result.stdout
    assert url in result.stdout


def test_datetimes_in_other_zones_are_normalised_to_utc(pki: PKI) -> None:
    plus_five = timezone(timedelta(hours=5))
    local_this_update = (NOW - DAY).astimezone(plus_five)
    revoked_at = (NOW - 2 * DAY).astimezone(plus_five)

    crl = build_crl(
        issuer_certificate=pki.root,
        signer=pki.root_signer,
        entries=[CRLEntry(0x99, revoked_at, "keyCompromise", revoked_at)],
        crl_number=3,
        this_update=local_this_update,
        next_update=(NOW + DAY).replace(tzinfo=None),  # naive means UTC
    )

    assert crl.last_update_utc == NOW - DAY
    assert crl.next_update_utc == NOW + DAY
    assert revoked_serials(crl)[0x99] == RevokedInfo(
        NOW - 2 * DAY, RevocationReason.KEY_COMPROMISE, NOW - 2 * DAY
    )


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [(NOW, NOW), (NOW, NOW - DAY)],
    ids=["equal", "before"],
)
def test_next_update_must_follow_this_update(
    pki: PKI, this_update: datetime, next_update: datetime
) -> None:
    with pytest.raises(CRLError, match=r"next_update .* must be after this_update"):
        root_crl(pki, this_update=this_update, next_update=next_update)


@pytest.mark.parametrize("number", [-1, 2**159, True, "5"])
def test_crl_number_must_be_a_20_octet_non_negative_int(pki: PKI, number: object) -> None:
    with pytest.raises(CRLError, match="crl_number"):
        root_crl(pki, crl_number=number)


def test_largest_crl_number_is_accepted(pki: PKI) -> None:
    assert crl_summary(root_crl(pki, crl_number=2**159 - 1)).crl_number == 2**159 - 1


def test_delta_base_must_be_older_than_the_delta(pki: PKI) -> None:
    with pytest.raises(CRLError, match="must be greater than its base"):
        root_crl(pki, crl_number=5, delta_crl_indicator=5)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ((0, NOW, "keyCompromise", None), "serial number must be positive"),
        ((-3, NOW, "keyCompromise", None), "serial number must be positive"),
        ((2**159, NOW, "keyCompromise", None), "at most 20 octets"),
        (("12", NOW, "keyCompromise", None), "not a valid"),
        ((5, "yesterday", "keyCompromise", None), "not a valid"),
        ((5, datetime(1949, 12, 31, 23, 59), "keyCompromise", None), "before 1950"),
        ((5, NOW, "sleepy", None), "unknown revocation reason 'sleepy'"),
        ((5, NOW, "removeFromCRL", None), "only appear in a delta CRL"),
        ((5, NOW, "aACompromise", None), "attribute certificates"),
        ((5, NOW, "keyCompromise", "last week"), "not a valid"),
        ((5, NOW), "not a valid"),
    ],
)
def test_bad_entries_raise_crl_error_naming_the_entry(
    pki: PKI, entry: tuple[object, ...], message: str
) -> None:
    entries = [(1, NOW, "superseded", None), entry]

    with pytest.raises(CRLError, match=message) as caught:
        root_crl(pki, entries=entries)

    assert "CRL entry #1" in str(caught.value)


def test_duplicate_serials_are_refused(pki: PKI) -> None:
    entries = [(5, NOW, "superseded", None), (5, NOW, "keyCompromise", None)]

    with pytest.raises(CRLError, match="more than once"):
        root_crl(pki, entries=entries)


def test_crl_entry_rejects_an_unknown_reason() -> None:
    entry = CRLEntry(1, NOW, "keyCompromise")  # type: ignore[arg-type]
    assert entry.reason is RevocationReason.KEY_COMPROMISE
    with pytest.raises(CRLError, match="unknown revocation reason"):
        CRLEntry(1, NOW, "compromised")  # type: ignore[arg-type]


def test_signer_must_hold_the_issuer_key(pki: PKI) -> None:
    with pytest.raises(CRLError, match="signer's key is not the key of the issuer"):
        root_crl(pki, signer=pki.intermediate_signer)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"garbage",
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        "text",
    ],
)
def test_load_crl_rejects_garbage(data: object) -> None:
    with pytest.raises(CRLError):
        load_crl(data)  # type: ignore[arg-type]


def test_load_crl_reads_pem_and_der(pki: PKI) -> None:
    crl = root_crl(pki)

    assert load_crl(crl_to_der(crl)) == crl
    assert load_crl(crl_to_pem(crl)) == crl
    assert crl_to_pem(crl).startswith(b"-----BEGIN X509 CRL-----")


# --- checking -------------------------------------------------------------------------------


def test_signature_checks_name_and_key(pki: PKI) -> None:
    crl = root_crl(pki)

    assert verify_crl_signature(crl, pki.root)
    assert not verify_crl_signature(crl, pki.intermediate)  # other name, other key
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    impostor = issue(
        subject="Test Root CA",
        public_key=impostor_key.public_key(),
        issuer=None,
        issuer_key=impostor_key,
        serial=0x1000,
        ca=True,
    )
    assert not verify_crl_signature(crl, impostor)  # same name, other key


def test_freshness_window(pki: PKI) -> None:
    crl = root_crl(pki, this_update=NOW, next_update=NOW + DAY)

    assert crl_is_fresh(crl, NOW)
    assert crl_is_fresh(crl, (NOW + DAY - timedelta(seconds=1)).replace(tzinfo=None))
    assert not crl_is_fresh(crl, NOW + DAY)
    assert not crl_is_fresh(crl, NOW - timedelta(seconds=1))


def test_revoked_serials(pki: PKI) -> None:
    revoked = revoked_serials(root_crl(pki))

    assert revoked == {
        pki.revoked_leaf.serial_number: RevokedInfo(
            NOW - 2 * DAY, RevocationReason.KEY_COMPROMISE, None
        ),
        0x5151: RevokedInfo(NOW - DAY, RevocationReason.UNSPECIFIED, None),
        0x7777: RevokedInfo(NOW - DAY, RevocationReason.SUPERSEDED, INVALID_SINCE),
    }
    assert pki.good_leaf.serial_number not in revoked


# --- the reason enum -------------------------------------------------------------------------


def test_revocation_reasons_match_rfc_5280_and_cryptography() -> None:
    assert RevocationReason.KEY_COMPROMISE.value == "keyCompromise"
    assert RevocationReason.KEY_COMPROMISE == "keyCompromise"
    assert RevocationReason.KEY_COMPROMISE.label == "Key compromise"
    assert RevocationReason.PRIVILEGE_WITHDRAWN.code == 9
    assert {reason.flag for reason in RevocationReason} == set(x509.ReasonFlags)
    for flag in x509.ReasonFlags:
        assert RevocationReason.from_flag(flag).flag is flag
    assert [r for r in RevocationReason if not r.is_issuable] == [
        RevocationReason.REMOVE_FROM_CRL,
        RevocationReason.AA_COMPROMISE,
    ]
