"""`python -m kmsclient verify-cert` checks revocation by default, against a live portal: the
CRL distribution point (complete + delta CRL) and, when no CRL is there, the OCSP responder;
the OCSP responder alone with --ocsp, CRL files with --crl, and --offline which says clearly
that revocation was not checked (exit 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kmsportal.crypto.x509 import parse_san, parse_subject
from pki import services
from pki.revocation import certificate_revoke

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsclient", "verify-cert", *map(str, args)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def live_pki(live_server, settings, tmp_path: Path) -> dict[str, object]:
    settings.KMS_PUBLIC_URL = live_server.url  # the CDP and AIA point at the live server
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=Revocation Root", key_type="ecp256"
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Revocation Issuing", parent=root,
        key_type="ecp256",
    )  # fmt: skip
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
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "chain.pem").write_text(issuing.certificate_pem)
    (tmp_path / "leaf.pem").write_text(leaf.certificate_pem)
    return {"dir": tmp_path, "leaf": leaf, "url": live_server.url}


def args(pki: dict[str, object], *extra: str) -> list[str | Path]:
    d: Path = pki["dir"]  # type: ignore[assignment]
    return [d / "leaf.pem", "--ca-cert", d / "root.pem", "--chain", d / "chain.pem", *extra]


def test_revocation_is_checked_by_default(live_pki: dict[str, object]) -> None:
    good = verify(*args(live_pki))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS revocation:" in good.stdout and "CRL #" in good.stdout
    assert good.stdout.splitlines()[-1] == "OK: CN=www is valid for purpose any and not revoked"

    certificate_revoke(actor=None, certificate=live_pki["leaf"], reason="keyCompromise")
    revoked = verify(*args(live_pki))
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    line = next(x for x in revoked.stdout.splitlines() if x.startswith("FAIL revocation:"))
    assert "'CN=www' was revoked" in line and "keyCompromise" in line
    assert revoked.stderr.startswith("FAILED: CN=www (revocation)")


def test_ocsp_and_crl_files_and_offline(live_pki: dict[str, object]) -> None:
    certificate_revoke(actor=None, certificate=live_pki["leaf"], reason="keyCompromise")
    by_ocsp = verify(*args(live_pki, "--ocsp"))
    assert by_ocsp.returncode == 1, by_ocsp.stdout + by_ocsp.stderr
    assert "OCSP http" in by_ocsp.stdout and "keyCompromise" in by_ocsp.stdout

    d: Path = live_pki["dir"]  # type: ignore[assignment]
    base = live_pki["url"]
    files = []
    for name in ("issuing.crl", "issuing-delta.crl", "root.crl"):
        answer = requests.get(f"{base}/pki/crl/{name}", timeout=30)
        if answer.status_code == 200:
            (d / name).write_bytes(answer.content)
            files += ["--crl", str(d / name)]
    by_files = verify(*args(live_pki, *files))
    assert by_files.returncode == 1, by_files.stdout + by_files.stderr
    assert "(--crl file)" in by_files.stdout and "keyCompromise" in by_files.stdout

    offline = verify(*args(live_pki, "--offline"))
    assert offline.returncode == 3
    assert "NOT CHECKED (--offline)" in offline.stdout
    assert "UNCHECKED:" in offline.stdout.splitlines()[-1]


def test_a_crl_file_that_is_not_a_crl_is_an_input_error(live_pki) -> None:
    d: Path = live_pki["dir"]  # type: ignore[assignment]
    done = verify(*args(live_pki, "--crl", str(d / "root.pem")))
    assert done.returncode == 2
    assert "CRL file" in done.stderr and "Traceback" not in done.stderr


def test_the_default_falls_back_to_ocsp_when_the_crl_is_not_there(
    live_pki: dict[str, object], settings
) -> None:
    """By default the CDP's CRL is tried first; when it answers 404, the AIA OCSP responder
    gives the answer (good, then revoked), and the exit status follows it."""
    settings.ROOT_URLCONF = "tests.kmsclient.urls_without_crls"
    base = live_pki["url"]
    assert requests.get(f"{base}/pki/crl/issuing.crl", timeout=30).status_code == 404

    good = verify(*args(live_pki))
    assert good.returncode == 0, good.stdout + good.stderr
    line = next(x for x in good.stdout.splitlines() if x.startswith("PASS revocation:"))
    assert f"OCSP {base}/pki/ocsp/issuing" in line, line
    assert good.stdout.splitlines()[-1] == "OK: CN=www is valid for purpose any and not revoked"

    certificate_revoke(actor=None, certificate=live_pki["leaf"], reason="keyCompromise")
    revoked = verify(*args(live_pki))
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    line = next(x for x in revoked.stdout.splitlines() if x.startswith("FAIL revocation:"))
    assert "'CN=www' was revoked" in line and "keyCompromise" in line, line
    assert f"OCSP {base}/pki/ocsp/issuing" in line, line
    assert revoked.stderr.startswith("FAILED: CN=www (revocation)")
