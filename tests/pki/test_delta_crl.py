"""Delta CRLs end to end (RFC 5280 5.2.4): a revocation is published in the CA's delta CRL at
once, `openssl verify -crl_check -use_deltas` sees it there before the next complete CRL,
pkilint finds nothing wrong with the complete CRL, the delta CRL or an issued certificate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from django.test import Client

from kmsportal.crypto.crl import crl_summary, load_crl, validate_crl
from pki import services
from pki.models import Certificate, CertificateAuthority
from tests.key_backends import BOTH_BACKENDS

from .conftest import csr_pem

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def issue(ca: CertificateAuthority, key: object, name: str) -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


def save(client: Client, url: str, path: Path) -> Path:
    response = client.get(url)
    assert response.status_code == 200, url
    path.write_bytes(response.content)
    return path


def test_delta_crl_urls_and_freshest_crl(client: Client, issuing, ec_key) -> None:
    record = issue(issuing, ec_key, "leaf.example.org")
    certificate = x509.load_der_x509_certificate(bytes(record.certificate_der))
    freshest = certificate.extensions.get_extension_for_class(x509.FreshestCRL)
    assert not freshest.critical
    [point] = freshest.value
    assert [n.value for n in point.full_name] == ["http://testserver/pki/crl/issuing-delta.crl"]
    der = client.get("/pki/crl/issuing-delta.crl")
    assert der.status_code == 200 and der["Content-Type"] == "application/pkix-crl"
    pem = client.get("/pki/crl/issuing-delta.pem")
    assert pem.content.startswith(b"-----BEGIN X509 CRL-----")
    summary = crl_summary(load_crl(der.content))
    base = crl_summary(load_crl(client.get("/pki/crl/issuing.crl").content))
    assert summary.is_delta and summary.base_crl_number == base.crl_number
    assert base.freshest_crl_urls == ("http://testserver/pki/crl/issuing-delta.crl",)
    assert client.get("/pki/crl/nope-delta.crl").status_code == 404


def test_openssl_use_deltas_sees_a_revocation_before_the_next_complete_crl(
    client: Client, root, issuing, ec_key, tmp_path: Path
) -> None:
    good = issue(issuing, ec_key, "good.example.org")
    bad = issue(issuing, ec_key, "bad.example.org")
    (tmp_path / "chain.pem").write_text(root.certificate_pem + issuing.certificate_pem)
    (tmp_path / "good.pem").write_text(good.certificate_pem)
    (tmp_path / "bad.pem").write_text(bad.certificate_pem)
    services.certificate_revoke(actor=None, certificate=bad, reason="keyCompromise")
    base = save(client, "/pki/crl/issuing.pem", tmp_path / "base.pem")
    delta = save(client, "/pki/crl/issuing-delta.pem", tmp_path / "delta.pem")
    root_crl = save(client, "/pki/crl/root.pem", tmp_path / "root.pem")
    assert crl_summary(load_crl(base.read_bytes())).entry_count == 0  # not rebuilt
    common = [
        "openssl", "verify", "-crl_check", "-CAfile", str(tmp_path / "chain.pem"),
        "-CRLfile", str(base), "-CRLfile", str(root_crl),
    ]  # fmt: skip

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*common, *args], capture_output=True, text=True, timeout=30, check=False
        )

    with_deltas = verify("-use_deltas", "-CRLfile", str(delta), str(tmp_path / "bad.pem"))
    assert with_deltas.returncode != 0
    assert "certificate revoked" in with_deltas.stdout + with_deltas.stderr
    assert verify("-use_deltas", "-CRLfile", str(delta), str(tmp_path / "good.pem")).returncode == 0
    # The complete CRL alone does not list it yet: only the delta knows.
    assert verify(str(tmp_path / "bad.pem")).returncode == 0
    # Our own relying-party checks agree: the delta is a valid delta for that base.
    issuer = x509.load_der_x509_certificate(bytes(issuing.certificate_der))
    from django.utils import timezone

    checked_base = validate_crl(base.read_bytes(), issuer_certificate=issuer, now=timezone.now())
    checked_delta = validate_crl(
        delta.read_bytes(), issuer_certificate=issuer, now=timezone.now(), base=checked_base
    )
    assert checked_base.ok and checked_delta.ok, (checked_base.problems, checked_delta.problems)
    assert int(bad.serial_hex, 16) in checked_delta.entries


def test_pkilint_finds_nothing_wrong(
    client: Client, issuing, ec_key, tmp_path: Path, settings
) -> None:
    settings.KMS_PUBLIC_URL = "http://pki.example.org"  # pkilint wants a real host name
    record = issue(issuing, ec_key, "lint.example.org")
    services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    other = issue(issuing, ec_key, "lint2.example.org")
    base = save(client, "/pki/crl/issuing.crl", tmp_path / "base.crl")
    delta = save(client, "/pki/crl/issuing-delta.crl", tmp_path / "delta.crl")
    (tmp_path / "leaf.pem").write_text(other.certificate_pem)
    binary = Path(sys.executable).parent  # pkilint is pinned in requirements-dev.txt

    def findings(*command: str | Path) -> list[dict]:
        done = subprocess.run(
            [*map(str, command), "-f", "JSON", "-s", "WARNING"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.stdout.strip(), done.stderr
        return (
            json.loads(done.stdout)["results"]
            if "results" in done.stdout
            else json.loads(done.stdout)
        )

    for crl in (base, delta):
        found = findings(binary / "lint_crl", "lint", "-t", "CRL", "-p", "PKIX", crl)
        assert not _problems(found), (crl.name, found)
    found = findings(binary / "lint_pkix_cert", "lint", tmp_path / "leaf.pem")
    assert not _problems(found), found


def _problems(output: object) -> list[object]:
    """Every finding in pkilint's JSON output, whatever its nesting."""
    found: list[object] = []
    if isinstance(output, dict):
        if "finding_descriptions" in output:
            found.extend(output["finding_descriptions"])
        for value in output.values():
            found.extend(_problems(value))
    elif isinstance(output, list):
        for item in output:
            found.extend(_problems(item))
    return found


def test_cached_entries_follow_every_change(issuing, ec_key) -> None:
    """The per-process entry cache of complete CRLs never serves a stale entry."""
    from kmsportal.crypto.crl import revoked_serials
    from pki.crl import crl_entry_cache_clear
    from pki.models import RevocationList

    def complete() -> dict:
        row = RevocationList.objects.filter(ca=issuing, is_delta=False).order_by("-crl_number")
        return revoked_serials(load_crl(bytes(row.first().crl_der)))

    held = issue(issuing, ec_key, "held.example.org")
    gone = issue(issuing, ec_key, "gone.example.org")
    services.certificate_revoke(actor=None, certificate=held, reason="certificateHold")
    services.certificate_revoke(actor=None, certificate=gone, reason="superseded")
    services.crl_publish(actor=None, ca=issuing)  # fills the cache
    first = complete()
    assert first[int(held.serial_hex, 16)].reason == "certificateHold"
    services.certificate_revoke(actor=None, certificate=held, reason="keyCompromise")
    services.crl_publish(actor=None, ca=issuing)
    assert complete()[int(held.serial_hex, 16)].reason == "keyCompromise"
    crl_entry_cache_clear()
    services.crl_publish(actor=None, ca=issuing)
    cold = complete()
    services.crl_publish(actor=None, ca=issuing)
    assert complete() == cold and set(cold) == {int(held.serial_hex, 16), int(gone.serial_hex, 16)}


def test_a_revocation_rebases_a_complete_crl_older_than_the_rebase_period(
    client: Client, issuing, ec_key, settings
) -> None:
    """No cron under `make run`: the first revocation after a quiet spell lands in the
    complete CRL too, so relying parties that ignore delta CRLs see it at once."""
    first = issue(issuing, ec_key, "first.example.org")
    second = issue(issuing, ec_key, "second.example.org")
    settings.KMS_CRL_REBASE_AFTER = 3600
    services.certificate_revoke(actor=None, certificate=first, reason="keyCompromise")
    base = crl_summary(load_crl(client.get("/pki/crl/issuing.crl").content))
    assert base.entry_count == 0  # the complete CRL is fresh: a delta only

    settings.KMS_CRL_REBASE_AFTER = 0  # the complete CRL is now "older" than the period
    services.certificate_revoke(actor=None, certificate=second, reason="superseded")
    base = crl_summary(load_crl(client.get("/pki/crl/issuing.crl").content))
    delta = crl_summary(load_crl(client.get("/pki/crl/issuing-delta.crl").content))
    assert base.entry_count == 2
    assert delta.is_delta and delta.base_crl_number == base.crl_number
