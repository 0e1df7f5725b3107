"""OpenSSL, a tool we did not write, against the CRL as relying parties download it from the
public view: `openssl verify -crl_check` refuses a revoked certificate (error 23) and
accepts a good one, `openssl crl -verify` accepts the CRL, and an expired CRL is refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from pki import services
from pki.crl import crl_publish_locked
from pki.models import Certificate, CertificateAuthority, CRLTrigger
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_pem

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]


def issue(ca: CertificateAuthority, key: object, name: str) -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


@pytest.fixture
def files(tmp_path: Path, root, issuing, ec_key) -> dict[str, Path]:
    good = issue(issuing, ec_key, "good.example.org")
    bad = issue(issuing, ec_key, "bad.example.org")
    services.certificate_revoke(actor=None, certificate=bad, reason="keyCompromise")
    services.crl_publish(actor=None, ca=issuing)  # the next complete CRL (publish_crls)
    paths = {
        "root": tmp_path / "root.pem",
        "chain": tmp_path / "chain.pem",
        "issuing": tmp_path / "issuing.pem",
        "good": tmp_path / "good.pem",
        "bad": tmp_path / "bad.pem",
    }
    paths["root"].write_text(root.certificate_pem)
    paths["issuing"].write_text(issuing.certificate_pem)
    paths["chain"].write_text(root.certificate_pem + issuing.certificate_pem)
    paths["good"].write_text(good.certificate_pem)
    paths["bad"].write_text(bad.certificate_pem)
    return paths


def download(client: Client, tmp_path: Path, url: str, name: str) -> Path:
    response = client.get(url)  # anonymous, as relying parties fetch it
    assert response.status_code == 200
    path = tmp_path / name
    path.write_bytes(response.content)
    return path


@pytest.mark.parametrize("encoding", ["crl", "pem"])
def test_openssl_verify_with_the_downloaded_crl(
    openssl, client: Client, files: dict[str, Path], tmp_path: Path, encoding: str
) -> None:
    crl = download(client, tmp_path, f"/pki/crl/issuing.{encoding}", f"issuing.{encoding}")
    if encoding == "crl":  # DER: convert with openssl itself for -CRLfile
        converted = openssl("crl", "-inform", "DER", "-in", crl, "-out", tmp_path / "crl.pem")
        assert converted.returncode == 0, converted.stderr
        crl = tmp_path / "crl.pem"
    common = ["verify", "-crl_check", "-CAfile", files["chain"], "-CRLfile", crl]
    revoked = openssl(*common, files["bad"])
    assert revoked.returncode != 0
    assert "error 23" in revoked.stdout + revoked.stderr
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    good = openssl(*common, files["good"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().endswith(": OK")


def test_openssl_crl_verify_accepts_it(
    openssl, client: Client, files: dict[str, Path], tmp_path: Path
) -> None:
    crl = download(client, tmp_path, "/pki/crl/issuing.crl", "issuing.crl")
    result = openssl(
        "crl", "-inform", "DER", "-in", crl, "-noout", "-verify", "-CAfile", files["chain"],
        "-text",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    assert "X509v3 CRL Number" in result.stdout and "Version 2" in result.stdout
    assert "X509v3 Authority Key Identifier" in result.stdout
    assert "Key Compromise" in result.stdout


def test_openssl_refuses_an_expired_crl(
    openssl, client: Client, files: dict[str, Path], tmp_path: Path, issuing
) -> None:
    # A CRL published eight days ago with a seven-day lifetime, as if publish_crls never ran.
    with transaction.atomic():
        locked = CertificateAuthority.objects.select_for_update().get(pk=issuing.pk)
        crl_publish_locked(
            ca=locked, trigger=CRLTrigger.SCHEDULED, now=timezone.now() - timedelta(days=8)
        )
    crl = download(client, tmp_path, "/pki/crl/issuing.pem", "expired.pem")
    result = openssl(
        "verify", "-crl_check", "-CAfile", files["chain"], "-CRLfile", crl, files["good"]
    )
    assert result.returncode != 0
    assert "error 12" in result.stdout + result.stderr
    assert "CRL has expired" in result.stdout + result.stderr


def test_openssl_sees_the_intermediate_on_the_roots_crl(
    openssl, client: Client, files: dict[str, Path], tmp_path: Path, root, issuing
) -> None:
    record = Certificate.objects.get(ca=root, serial_hex=issuing.serial_hex)
    services.certificate_revoke(actor=None, certificate=record, reason="cACompromise")
    root_crl = download(client, tmp_path, "/pki/crl/root.pem", "root-crl.pem")
    issuing_crl = download(client, tmp_path, "/pki/crl/issuing.pem", "issuing-crl.pem")
    both = tmp_path / "crls.pem"
    both.write_bytes(root_crl.read_bytes() + issuing_crl.read_bytes())
    result = openssl(
        "verify", "-crl_check_all", "-CAfile", files["chain"], "-CRLfile", both, files["good"]
    )
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr
