"""`python -m kmsclient verify-cert`: a relying party's offline check, run as a real process
against certificates this portal issued."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kmsportal.crypto.x509 import parse_san, parse_subject
from pki import services

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def kmsclient(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsclient", "verify-cert", *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(db, tmp_path: Path) -> Path:
    """root.pem, intermediate.pem, server.pem, client.pem issued through the services."""
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=Client Test Root", key_type="ecp256"
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Client Test Issuing", parent=root, key_type="ecp256"
    )
    key = ec.generate_private_key(ec.SECP256R1())

    def csr(subject: str, sans: list[str]) -> bytes:
        builder = x509.CertificateSigningRequestBuilder().subject_name(parse_subject(subject))
        builder = builder.add_extension(
            x509.SubjectAlternativeName([parse_san(s) for s in sans]), critical=False
        )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    server = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr("CN=www", ["dns:www.example.org"]),
        profile="tls-server",
    )
    client = services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr("CN=app", ["uri:https://kms.example.org/c/1"]),
        profile="kms-client",
    )
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "root.der").write_bytes(bytes(root.certificate_der))
    (tmp_path / "intermediate.pem").write_text(issuing.certificate_pem)
    (tmp_path / "server.pem").write_text(server.certificate_pem)
    (tmp_path / "server.der").write_bytes(bytes(server.certificate_der))
    (tmp_path / "client.pem").write_text(client.certificate_pem)
    return tmp_path


def test_a_good_server_certificate_passes(files: Path) -> None:
    done = kmsclient(
        files / "server.pem",
        "--ca-cert",
        files / "root.pem",
        "--chain",
        files / "intermediate.pem",
        "--hostname",
        "www.example.org",
        "--purpose",
        "server",
        "--offline",
    )
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[1] == "PASS path: CN=www → CN=Client Test Issuing → CN=Client Test Root (trust root)"
    )
    assert "PASS hostname: www.example.org matches dns:www.example.org" in lines
    assert (
        "SKIP revocation: NOT CHECKED (--offline): the certificate may have been revoked; "
        "this answer does not say" in lines
    )
    assert lines[-1] == (
        "UNCHECKED: CN=www passed every other check for purpose server, but its revocation "
        "status was not checked (--offline)"
    )


def test_der_inputs_and_a_client_certificate(files: Path) -> None:
    done = kmsclient(
        files / "server.der", "--ca-cert", files / "root.der", "--chain", files / "intermediate.pem",
        "--offline",
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    client = kmsclient(
        files / "client.pem",
        "--ca-cert",
        files / "root.pem",
        "--chain",
        files / "intermediate.pem",
        "--purpose",
        "client",
        "--offline",
    )
    assert client.returncode == 3, client.stdout + client.stderr


@pytest.mark.parametrize(
    ("extra", "failed"),
    [
        (
            ["--hostname", "evil.example.org", "--purpose", "server"],
            "FAIL hostname: evil.example.org does not match",
        ),
        (["--purpose", "client"], "FAIL key usage and EKU:"),
        ([], "FAIL path: the issuer 'CN=Client Test Issuing' of 'CN=www' was not found"),
    ],
)
def test_failures_exit_1_and_name_the_check(files: Path, extra: list[str], failed: str) -> None:
    chain = [] if extra == [] else ["--chain", str(files / "intermediate.pem")]
    done = kmsclient(
        files / "server.pem", "--ca-cert", files / "root.pem", *chain, *extra, "--offline"
    )
    assert done.returncode == 1
    assert any(line.startswith(failed) for line in done.stdout.splitlines()), done.stdout
    assert done.stderr.startswith("FAILED: CN=www (")


def test_a_foreign_root_fails(files: Path) -> None:
    other = services.certificate_authority_create(
        actor=None, name="other", subject="CN=Someone Else's Root", key_type="ecp256"
    )
    (files / "other.pem").write_text(other.certificate_pem)
    done = kmsclient(
        files / "server.pem",
        "--ca-cert",
        files / "other.pem",
        "--chain",
        files / "intermediate.pem",
        "--offline",
    )
    assert done.returncode == 1
    assert (
        "FAIL path: the issuer 'CN=Client Test Root' of 'CN=Client Test Issuing' was not found"
        in done.stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["{d}/missing.pem", "--ca-cert", "{d}/root.pem"],
            "error: cannot read certificate {d}/missing.pem",
        ),
        (
            ["{d}/server.pem", "--ca-cert", "{d}/garbage.pem"],
            "error: CA certificate file {d}/garbage.pem",
        ),
        (
            ["{d}/server.pem", "--ca-cert", "{d}/root.pem", "--chain", "{d}/missing.pem"],
            "error: cannot read chain file",
        ),
    ],
)
def test_unreadable_input_exits_2(files: Path, args: list[str], message: str) -> None:
    (files / "garbage.pem").write_text("not a certificate")
    done = kmsclient(*[a.format(d=files) for a in args])
    assert done.returncode == 2
    assert done.stderr.startswith(message.format(d=files)), done.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.pem", b"not a certificate", "the data is not a certificate"),
        ("truncated.der", None, "the DER data is truncated"),
        ("empty.pem", b"", "the certificate bundle is empty"),
    ],
)
def test_any_certificate_bytes_give_a_report_and_exit_1(
    files: Path, name: str, content: bytes | None, message: str
) -> None:
    """Issue 18: one line per failed check, exit 1, no traceback."""
    data = content if content is not None else (files / "server.der").read_bytes()[:100]
    (files / name).write_bytes(data)
    done = kmsclient(files / name, "--ca-cert", files / "root.pem", "--offline")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL ")]
    assert failed and failed[0].startswith("FAIL decoding:") and message in failed[0]
    assert "Traceback" not in done.stderr


def test_an_underscore_hostname_gives_a_report(files: Path) -> None:
    done = kmsclient(
        files / "server.pem", "--ca-cert", files / "root.pem", "--chain",
        files / "intermediate.pem", "--hostname", "under_score.example.org", "--purpose",
        "server", "--offline",
    )  # fmt: skip
    assert done.returncode == 1
    assert "FAIL hostname: under_score.example.org does not match" in done.stdout
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(files: Path) -> None:
    assert kmsclient(files / "server.pem").returncode == 2  # --ca-cert is required
    assert (
        kmsclient(
            files / "server.pem", "--ca-cert", files / "root.pem", "--purpose", "x"
        ).returncode
        == 2
    )
