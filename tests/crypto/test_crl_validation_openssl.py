"""RFC 5280 §6.3.3 refusals, with CRLs made by OpenSSL (``openssl ca -gencrl``): the checks
shared by ``kmsclient crl``, the validator and the portal (``validate_crl``)."""

from __future__ import annotations

import datetime as dt
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kmsportal.crypto.crl import validate_crl

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def openssl(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def make_ca(directory: Path, key_usage: str) -> x509.Certificate:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=OpenSSL CRL CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", f"keyUsage=critical,{key_usage}",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    return x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())


def gencrl(directory: Path, *, crl_number: bool, extra: str = "", revoked: str = "") -> bytes:
    (directory / "index.txt").write_text(revoked)
    lines = [
        "[ca]", "default_ca = CA_default", "[CA_default]", "database = index.txt",
        "default_md = sha256", "default_crl_days = 7", "crl_extensions = crl_ext",
        "[crl_ext]", "authorityKeyIdentifier = keyid:always",
    ]  # fmt: skip
    if crl_number:
        lines.insert(4, "crlnumber = crlnumber")
        (directory / "crlnumber").write_text("01\n")
    if extra:
        lines.append(extra)
    (directory / "openssl.cnf").write_text("\n".join(lines) + "\n")
    openssl(
        "ca", "-gencrl", "-config", "openssl.cnf", "-keyfile", "ca.key", "-cert", "ca.pem",
        "-out", "crl.pem", cwd=directory,
    )  # fmt: skip
    return (directory / "crl.pem").read_bytes()


@pytest.fixture
def good_ca(tmp_path: Path) -> tuple[Path, x509.Certificate]:
    return tmp_path, make_ca(tmp_path, "keyCertSign,cRLSign")


def test_an_openssl_crl_with_everything_in_order_is_accepted(good_ca) -> None:
    directory, ca = good_ca
    result = validate_crl(gencrl(directory, crl_number=True), issuer_certificate=ca, now=now())
    assert result.ok, result.problems


def test_issuer_without_crlsign_is_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "keyCertSign,digitalSignature")
    result = validate_crl(gencrl(tmp_path, crl_number=True), issuer_certificate=ca, now=now())
    assert not result.ok
    assert any("cRLSign" in p for p in result.problems)


def test_missing_crl_number_is_refused(good_ca) -> None:
    directory, ca = good_ca
    result = validate_crl(gencrl(directory, crl_number=False), issuer_certificate=ca, now=now())
    assert any("no CRLNumber" in p for p in result.problems)


def test_unknown_critical_crl_extension_is_refused(good_ca) -> None:
    directory, ca = good_ca
    data = gencrl(directory, crl_number=True, extra="1.3.6.1.4.1.99999.7 = critical,ASN1:NULL")
    result = validate_crl(data, issuer_certificate=ca, now=now())
    assert any("unknown critical extension 1.3.6.1.4.1.99999.7" in p for p in result.problems)


def test_idp_limited_to_some_reasons_is_refused(good_ca) -> None:
    directory, ca = good_ca
    data = gencrl(
        directory, crl_number=True, extra="issuingDistributionPoint = critical,@idp\n[idp]\n"
        "onlysomereasons = keyCompromise"
    )  # fmt: skip
    result = validate_crl(data, issuer_certificate=ca, now=now())
    assert any("only some revocation reasons" in p for p in result.problems)


def test_idp_for_end_entities_does_not_cover_a_ca(good_ca) -> None:
    directory, ca = good_ca
    data = gencrl(
        directory, crl_number=True, extra="issuingDistributionPoint = critical,@idp\n[idp]\n"
        "onlyuser = TRUE"
    )  # fmt: skip
    result = validate_crl(data, issuer_certificate=ca, now=now(), certificate=ca)
    assert any("only covers end-entity certificates" in p for p in result.problems)


def test_stale_and_future_crls_are_refused(good_ca) -> None:
    directory, ca = good_ca
    data = gencrl(directory, crl_number=True)
    assert any("not current" in p for p in
               validate_crl(data, issuer_certificate=ca, now=now() + dt.timedelta(days=8)).problems)  # fmt: skip
    assert any("in the future" in p for p in
               validate_crl(data, issuer_certificate=ca, now=now() - dt.timedelta(days=1)).problems)  # fmt: skip


def test_critical_crl_number_is_refused(good_ca) -> None:
    """OpenSSL's ca always writes a non-critical CRLNumber; this one is made with
    cryptography, signed by the same OpenSSL-made CA key."""
    directory, ca = good_ca
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now() - dt.timedelta(minutes=1))
        .next_update(now() + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=True)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    result = validate_crl(crl, issuer_certificate=ca, now=now())
    assert any("CRLNumber is critical" in p for p in result.problems)


def test_a_wrong_key_is_refused(good_ca, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory, _ca = good_ca
    other = make_ca(tmp_path_factory.mktemp("other"), "keyCertSign,cRLSign")
    result = validate_crl(gencrl(directory, crl_number=True), issuer_certificate=other, now=now())
    assert any("signature does not verify" in p for p in result.problems)


@pytest.mark.parametrize("data", [b"", b"junk", b"\x30\x00", b"-----BEGIN X509 CRL-----\n"])
def test_any_bytes_are_refused_without_raising(good_ca, data: bytes) -> None:
    _directory, ca = good_ca
    result = validate_crl(data, issuer_certificate=ca, now=now())
    assert not result.ok and result.problems


def test_kmsclient_crl_refuses_an_issuer_without_crlsign(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "keyCertSign")
    assert ca is not None
    gencrl(tmp_path, crl_number=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kmsclient", "crl", "--url",
             f"http://127.0.0.1:{server.server_port}/crl.pem", "--ca-cert", tmp_path / "ca.pem"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cRLSign" in done.stderr


_ = ec  # EC keys are made by openssl here
