"""`python -m kmsclient crl`: a relying party downloads a CA's CRL from a live portal, checks
its signature and freshness, and looks a serial number up. Run as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import transaction
from django.utils import timezone

from kmsportal.crypto.x509 import parse_san, parse_subject
from pki import services
from pki.crl import crl_publish_locked
from pki.models import CertificateAuthority, CRLTrigger

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def kmsclient(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsclient", "crl", *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def pki(tmp_path: Path, live_server, settings) -> dict[str, object]:
    settings.KMS_PUBLIC_URL = live_server.url  # FreshestCRL points at the live delta CRL
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=CRL CLI Root", key_type="ecp256"
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=CRL CLI Issuing", parent=root, key_type="ecp256"
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject("CN=www"))
        .add_extension(x509.SubjectAlternativeName([parse_san("dns:www.example.org")]), False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr, profile="tls-server"
    )
    (tmp_path / "issuing.pem").write_text(issuing.certificate_pem)
    (tmp_path / "issuing.der").write_bytes(bytes(issuing.certificate_der))
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    return {"issuing": issuing, "leaf": leaf, "dir": tmp_path}


def test_good_then_revoked(live_server, pki: dict[str, object]) -> None:
    leaf = pki["leaf"]
    directory: Path = pki["dir"]  # type: ignore[assignment]
    url = f"{live_server.url}/pki/crl/issuing.crl"
    serial = leaf.serial_number_display  # type: ignore[attr-defined]

    good = kmsclient("--url", url, "--ca-cert", directory / "issuing.pem", "--serial", serial)
    assert good.returncode == 0, good.stderr
    assert "OK: CRL #1 of CN=CRL CLI Issuing: signature valid, current" in good.stdout
    assert f"GOOD: serial {serial} is not on the CRL" in good.stdout

    services.certificate_revoke(
        actor=None,
        certificate=leaf,  # type: ignore[arg-type]
        reason="keyCompromise",
        invalidity_date=timezone.now() - timedelta(days=1),
    )
    colons = ":".join(serial[i : i + 2] for i in range(0, len(serial), 2)).lower()
    revoked = kmsclient("--url", url, "--ca-cert", directory / "issuing.der", "--serial", colons)
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    # The complete CRL is still #1; the revocation is in the delta CRL it points to.
    assert "OK: CRL #1" in revoked.stdout and "0 revoked certificates" in revoked.stdout
    assert "delta CRL #3 consulted as well" in revoked.stdout
    assert f"REVOKED: serial {serial} was revoked on" in revoked.stdout
    assert "reason keyCompromise, key compromised since" in revoked.stdout

    # Once publish_crls has run, the complete CRL lists it itself.
    services.crl_publish(actor=None, ca=pki["issuing"])  # type: ignore[arg-type]
    plain = kmsclient("--url", url.replace(".crl", ".pem"), "--ca-cert", directory / "issuing.pem")
    assert plain.returncode == 0, plain.stderr
    assert "1 revoked certificate" in plain.stdout


def test_a_crl_not_signed_by_the_given_ca_is_invalid(live_server, pki: dict[str, object]) -> None:
    directory: Path = pki["dir"]  # type: ignore[assignment]
    result = kmsclient(
        "--url", f"{live_server.url}/pki/crl/issuing.crl", "--ca-cert", directory / "root.pem"
    )
    assert result.returncode == 1
    assert (
        "INVALID: the CRL at" in result.stderr
        and "is not the CA (CN=CRL CLI Root)" in result.stderr
    )


def test_an_expired_crl_is_invalid(live_server, pki: dict[str, object]) -> None:
    directory: Path = pki["dir"]  # type: ignore[assignment]
    issuing: CertificateAuthority = pki["issuing"]  # type: ignore[assignment]
    with transaction.atomic():
        locked = CertificateAuthority.objects.select_for_update().get(pk=issuing.pk)
        crl_publish_locked(
            ca=locked, trigger=CRLTrigger.SCHEDULED, now=timezone.now() - timedelta(days=8)
        )
    result = kmsclient(
        "--url", f"{live_server.url}/pki/crl/issuing.crl", "--ca-cert", directory / "issuing.pem"
    )
    assert result.returncode == 1
    assert "is not current" in result.stderr


def test_something_that_is_not_a_crl_is_invalid(live_server, pki: dict[str, object]) -> None:
    directory: Path = pki["dir"]  # type: ignore[assignment]
    result = kmsclient(
        "--url", f"{live_server.url}/pki/ca/issuing.crt", "--ca-cert", directory / "issuing.pem"
    )
    assert result.returncode == 1
    assert "INVALID:" in result.stderr and "not a valid X.509 CRL" in result.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-ca", "--ca-cert: cannot read"),
        ("bad-ca", "--ca-cert:"),
        ("bad-serial", "--serial: 'xyz' is not a hexadecimal serial number"),
        ("zero-serial", "is not a possible serial number"),
        ("not-http", "is not an http:// or https:// URL"),
        ("404", "answered HTTP 404"),
        ("unreachable", "cannot download"),
    ],
)
def test_input_errors_exit_2(live_server, pki: dict[str, object], case: str, message: str) -> None:
    directory: Path = pki["dir"]  # type: ignore[assignment]
    (directory / "garbage.pem").write_text("not a certificate")
    url = f"{live_server.url}/pki/crl/issuing.crl"
    ca = directory / "issuing.pem"
    args = {
        "missing-ca": ["--url", url, "--ca-cert", directory / "nope.pem"],
        "bad-ca": ["--url", url, "--ca-cert", directory / "garbage.pem"],
        "bad-serial": ["--url", url, "--ca-cert", ca, "--serial", "xyz"],
        "zero-serial": ["--url", url, "--ca-cert", ca, "--serial", "00"],
        "not-http": ["--url", "ftp://example.org/x.crl", "--ca-cert", ca],
        "404": ["--url", f"{live_server.url}/pki/crl/nope.crl", "--ca-cert", ca],
        "unreachable": [
            "--url",
            f"http://127.0.0.1:{_closed_port()}/pki/crl/issuing.crl",
            "--ca-cert",
            ca,
            "--timeout",
            "5",
        ],
    }[case]
    result = kmsclient(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_usage_errors_exit_2() -> None:
    result = kmsclient("--url", "http://127.0.0.1/x.crl")
    assert result.returncode == 2
    assert "--ca-cert" in result.stderr


def test_serials_are_printed_in_whole_bytes_like_the_portal() -> None:
    from kmsclient.crl import format_serial, parse_serial
    from pki.models import serial_display, serial_to_hex

    for number in (
        0xA77,
        0x2A77,
        1,
        0x0F,
        2**158 + 5,
        int("02A77D850A12CBB71CC4B15C7DEB660672FE9B14", 16),
    ):
        assert format_serial(number) == serial_display(serial_to_hex(number))
        assert parse_serial(format_serial(number)) == number
