"""`manage.py ca_create` and `manage.py cert_issue` against the real database."""

from __future__ import annotations

import re
import stat
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from pki.models import Certificate, CertificateAuthority

from .conftest import csr_pem, pki_state

pytestmark = pytest.mark.django_db

PASSWORD = "a file-borne pkcs12 password"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def refused(args: list[str], message: str) -> None:
    before = pki_state()
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).strip()
    assert pki_state() == before


# --- ca_create -------------------------------------------------------------------------------


def test_ca_create_root_and_intermediate(db) -> None:
    out = run(
        "ca_create",
        "root",
        "--subject",
        "CN=Cmd Root,O=Example",
        "--key-type",
        "ecp256",
        "--path-length",
        "1",
    )
    root = CertificateAuthority.objects.get(name="root")
    assert out.startswith(
        f"Created CA root (root): CN=Cmd Root,O=Example, EC P-256, serial {root.serial_number_display}, "
        f"valid until {root.not_after:%Y-%m-%d %H:%M} UTC, path length 1\n"
    )
    assert f"SHA-256 fingerprint {root.fingerprint_sha256_display}" in out
    out = run(
        "ca_create",
        "issuing",
        "--subject",
        "CN=Cmd Issuing",
        "--parent",
        "root",
        "--key-type",
        "ecp256",
        "--days",
        "365",
    )
    issuing = CertificateAuthority.objects.get(name="issuing")
    assert "(intermediate under root)" in out and "path length 0" in out
    assert issuing.parent == root and (issuing.not_after - issuing.not_before).days == 365
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_type, event.target_label) == (
        "ca.created",
        "system",
        "issuing",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["x", "--subject", "CN=x", "--parent", "nope"],
            "--parent: no CA named 'nope' (known: root)",
        ),
        (["Bad_Name", "--subject", "CN=x"], "the CA name 'Bad_Name' is not valid"),
        (["root", "--subject", "CN=x"], "a CA named 'root' already exists"),
        (["x", "--subject", "CN=Cmd Root"], "a CA with the subject 'CN=Cmd Root' already exists"),
        (
            ["x", "--subject", "CN=x", "--parent", "root", "--path-length", "1"],
            "the path length (1) must be less than the parent CA's path length (1)",
        ),
        (["x", "--subject", "CN=x", "--parent", "root", "--days", "9999"], "after its parent CA"),
        (
            ["x", "--subject", "CN=x", "--days", "0"],
            "the validity must be between 1 and 36500 days",
        ),
    ],
)
def test_ca_create_refusals(db, args: list[str], message: str) -> None:
    run(
        "ca_create",
        "root",
        "--subject",
        "CN=Cmd Root",
        "--key-type",
        "ecp256",
        "--path-length",
        "1",
    )
    refused(["ca_create", *args, "--key-type", "ecp256"], message)


# --- cert_issue ------------------------------------------------------------------------------


def test_cert_issue_from_csr(issuing, ec_key, tmp_path: Path) -> None:
    (tmp_path / "req.pem").write_bytes(csr_pem(ec_key))
    out = run(
        "cert_issue",
        "--ca",
        "issuing",
        "--profile",
        "tls-server",
        "--csr",
        str(tmp_path / "req.pem"),
        "--days",
        "30",
        "--out",
        str(tmp_path / "leaf.pem"),
    )
    record = Certificate.objects.get(source="csr")
    assert out.splitlines()[0] == f"serial {record.serial_number_display}"
    assert re.fullmatch(r"serial [0-9A-F]+", out.splitlines()[0])
    assert f"Wrote the certificate (PEM) to {tmp_path / 'leaf.pem'}" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    assert format(cert.serial_number, "X").zfill(40) == record.serial_hex
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, seconds=-1)


def test_cert_issue_to_stdout_with_overrides(issuing, ec_key, tmp_path: Path) -> None:
    (tmp_path / "req.pem").write_bytes(csr_pem(ec_key))
    out = run(
        "cert_issue",
        "--ca",
        "issuing",
        "--profile",
        "tls-server",
        "--csr",
        str(tmp_path / "req.pem"),
        "--subject",
        "CN=override.example.org",
        "--san",
        "dns:override.example.org",
        "--san",
        "ip:192.0.2.1",
    )
    assert "-----BEGIN CERTIFICATE-----" in out
    record = Certificate.objects.get(source="csr")
    assert record.subject == "CN=override.example.org"
    assert record.san_list == ["dns:override.example.org", "ip:192.0.2.1"]


def test_cert_issue_generate_writes_a_private_pkcs12(issuing, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    out = run(
        "cert_issue",
        "--ca",
        "issuing",
        "--profile",
        "tls-client",
        "--generate",
        "--subject",
        "CN=robot",
        "--san",
        "uri:https://kms.example.org/clients/robot",
        "--key-type",
        "ecp256",
        "--pkcs12-password-file",
        str(tmp_path / "pw"),
        "--out",
        str(tmp_path / "robot.pem"),
    )
    p12 = tmp_path / "robot.p12"
    assert f"Wrote the key and certificate (PKCS#12, mode 0600) to {p12}" in out
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    key, cert, _chain = pkcs12.load_key_and_certificates(p12.read_bytes(), PASSWORD.encode())
    assert key.public_key() == cert.public_key()
    assert cert == x509.load_pem_x509_certificate((tmp_path / "robot.pem").read_bytes())
    assert PASSWORD not in out
    events = list(AuditEvent.objects.order_by("-sequence")[:2])
    assert [e.action for e in events] == ["certificate.key_delivered", "certificate.issued"]

    # A second run never overwrites the key file, and issues nothing.
    refused(
        [
            "cert_issue",
            "--ca",
            "issuing",
            "--profile",
            "tls-client",
            "--generate",
            "--subject",
            "CN=robot",
            "--pkcs12-password-file",
            str(tmp_path / "pw"),
            "--out",
            str(tmp_path / "robot.pem"),
        ],
        "robot.p12 exists; a private key is never overwritten",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ca", "nope", "--profile", "tls-server", "--csr", "{req}"], "--ca: no CA named 'nope'"),
        (
            ["--ca", "issuing", "--profile", "nope", "--csr", "{req}"],
            "unknown certificate profile 'nope'",
        ),
        (
            ["--ca", "issuing", "--profile", "tls-server", "--csr", "{dir}/missing.pem"],
            "--csr: cannot read",
        ),
        (
            [
                "--ca",
                "issuing",
                "--profile",
                "tls-server",
                "--csr",
                "{req}",
                "--out",
                "{dir}/no/such/dir/x.pem",
            ],
            "--out: the directory",
        ),
        (
            ["--ca", "issuing", "--profile", "tls-server", "--csr", "{req}", "--days", "500"],
            "allows at most 200 days",
        ),
        (
            ["--ca", "issuing", "--profile", "tls-server", "--csr", "{req}", "--san", "mail:x"],
            "is not a subject alternative name",
        ),
        (
            [
                "--ca",
                "issuing",
                "--profile",
                "tls-server",
                "--csr",
                "{req}",
                "--pkcs12-password-file",
                "{pw}",
            ],
            "--pkcs12-password-file goes with --generate",
        ),
        (
            ["--ca", "issuing", "--profile", "tls-client", "--generate", "--subject", "CN=x"],
            "--generate needs --out FILE",
        ),
        (
            ["--ca", "issuing", "--profile", "tls-client", "--generate", "--out", "{dir}/x.pem"],
            "--generate needs --subject and/or --san",
        ),
        (
            [
                "--ca",
                "issuing",
                "--profile",
                "tls-client",
                "--generate",
                "--subject",
                "CN=x",
                "--out",
                "{dir}/x.pem",
            ],
            "--generate needs a PKCS#12 password",
        ),
        (
            [
                "--ca",
                "issuing",
                "--profile",
                "tls-client",
                "--generate",
                "--subject",
                "CN=x",
                "--out",
                "{dir}/x.pem",
                "--pkcs12-password-file",
                "{short}",
            ],
            "the PKCS#12 password is too short",
        ),
        (
            [
                "--ca",
                "issuing",
                "--profile",
                "tls-server",
                "--generate",
                "--subject",
                "CN=x",
                "--out",
                "{dir}/x.pem",
                "--pkcs12-password-file",
                "{pw}",
            ],
            "the tls-server profile requires at least one subject alternative name",
        ),
    ],
)
def test_cert_issue_refusals(
    issuing, ec_key, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "req.pem").write_bytes(csr_pem(ec_key))
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "short").write_text("short")
    values = {
        "req": tmp_path / "req.pem",
        "dir": tmp_path,
        "pw": tmp_path / "pw",
        "short": tmp_path / "short",
    }
    refused(["cert_issue", *[a.format(**values) for a in args]], message)
    assert not list(tmp_path.glob("*.p12")) and not (tmp_path / "x.pem").exists()
