"""A deployment whose KMS_PUBLIC_URL changed: warnings, and `manage.py reissue_public_urls`."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography import x509
from django.core.management import call_command
from django.test import Client

from audit.models import AuditEvent
from kmsportal.cli_actor import (
    CommandLineActor,
    command_line_actor_reset,
    command_line_actor_set,
)
from pki import services
from pki.models import CertificateAuthority
from pki.public_urls import certificate_addresses
from portal.public_url import stale_certificate_addresses
from tests.pki.conftest import csr_pem

OLD = "http://127.0.0.1:8000"
NEW = "http://kms.example.org:18100"


@pytest.fixture
def moved(settings, db, ec_key):
    """A root, an intermediate and a leaf issued under OLD; then the deployment moves."""
    settings.KMS_PUBLIC_URL = OLD
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=Root,O=Example", key_type="ecp256"
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Issuing,O=Example", parent=root, key_type="ecp256"
    )
    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(ec_key), profile="tls-server"
    )
    settings.KMS_PUBLIC_URL = NEW
    return root, issuing, leaf


def reissue(*args: str) -> str:
    out = io.StringIO()
    call_command("reissue_public_urls", *args, stdout=out)
    return out.getvalue()


def test_stale_addresses_are_named_and_a_dry_run_changes_nothing(moved) -> None:
    _, issuing, _ = moved
    warnings = stale_certificate_addresses()
    assert len(warnings) == 1 and "CA issuing" in warnings[0] and OLD in warnings[0]
    events = AuditEvent.objects.count()
    assert "Would re-issue CA issuing" in reissue("--dry-run")
    assert CertificateAuthority.objects.get(pk=issuing.pk).serial_hex == issuing.serial_hex
    assert AuditEvent.objects.count() == events


def test_reissue_keeps_the_key_and_moves_the_addresses(moved) -> None:
    root, issuing, leaf = moved
    token = command_line_actor_set(CommandLineActor(origin="cli:alice@kms1"))
    try:
        output = reissue()
    finally:
        command_line_actor_reset(token)
    assert "Re-issued CA issuing" in output

    fresh = CertificateAuthority.objects.get(pk=issuing.pk)
    assert fresh.serial_hex != issuing.serial_hex
    assert certificate_addresses(bytes(fresh.certificate_der)) == (
        f"{NEW}/pki/crl/root.crl",
        f"{NEW}/pki/ca/root.crt",
        f"{NEW}/pki/ocsp/root",
    )
    new_ca = x509.load_der_x509_certificate(bytes(fresh.certificate_der))
    old_ca = x509.load_der_x509_certificate(bytes(issuing.certificate_der))
    assert new_ca.public_key() == old_ca.public_key()
    assert new_ca.subject == old_ca.subject
    assert new_ca.not_valid_after_utc == old_ca.not_valid_after_utc
    # What the CA signed before still chains to its new certificate; the root is unchanged.
    x509.load_der_x509_certificate(bytes(leaf.certificate_der)).verify_directly_issued_by(new_ca)
    new_ca.verify_directly_issued_by(x509.load_der_x509_certificate(bytes(root.certificate_der)))
    assert CertificateAuthority.objects.get(pk=root.pk).serial_hex == root.serial_hex

    event = AuditEvent.objects.get(action="ca.reissued")
    assert event.actor_name == "cli:alice@kms1"
    assert event.details["previous_serial"] == issuing.serial_number_display
    assert event.details["crl_url"] == f"{NEW}/pki/crl/root.crl"
    # Idempotent.
    assert "already" in reissue()
    assert stale_certificate_addresses() == []


def test_the_key_server_certificate_is_renewed(settings, db) -> None:
    from vault.models import ServerIdentity
    from vault.server_identity import distribution_bootstrap

    settings.KMS_PUBLIC_URL = OLD
    distribution_bootstrap()
    before = ServerIdentity.objects.first().certificate
    settings.KMS_PUBLIC_URL = NEW
    assert any("key server certificate" in w for w in stale_certificate_addresses())
    output = reissue()
    assert "Renewed the key server certificate" in output
    after = ServerIdentity.objects.first().certificate
    assert after.pk != before.pk
    assert all(url.startswith(NEW) for url in certificate_addresses(bytes(after.certificate_der)))
    assert "kms.example.org" in after.sans


def test_administrators_see_the_mismatch_on_the_dashboard(moved, administrator, operator) -> None:
    page = administrator.get("/").content.decode()
    assert 'id="public-url-warning"' in page
    assert "served as http://testserver/" in page
    assert "reissue_public_urls" in page
    assert 'id="public-url-warning"' not in operator.get("/").content.decode()


def test_requests_to_another_host_are_logged_once(settings, db, caplog) -> None:
    from portal import public_url

    settings.KMS_PUBLIC_URL = NEW
    public_url._hosts_warned.clear()
    client = Client()
    with caplog.at_level(logging.WARNING, logger="kmsportal.public_url"):
        client.get("/healthz")
        client.get("/healthz")
    warnings = [r for r in caplog.records if r.name == "kmsportal.public_url"]
    assert len(warnings) == 1
    assert "http://testserver/" in warnings[0].getMessage() and NEW in warnings[0].getMessage()


def test_reissue_keeps_a_validity_that_ended_with_the_parent(settings, db, monkeypatch) -> None:
    """An intermediate whose default validity ended with its parent's (not whole days) keeps
    exactly that end when re-issued, not one rounded down to whole days."""
    from datetime import timedelta

    from kmsportal.crypto.x509 import builders

    settings.KMS_PUBLIC_URL = OLD
    root = services.certificate_authority_create(
        actor=None, name="root", subject="CN=Root,O=Example", key_type="ecp256", days=100
    )
    real_now = builders._utcnow
    monkeypatch.setattr(builders, "_utcnow", lambda: real_now() + timedelta(seconds=7))
    monkeypatch.setattr(
        "pki.services.cas.timezone.now", lambda: root.not_before + builders.CLOCK_SKEW
    )
    issuing = services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Issuing,O=Example", parent=root, key_type="ecp256"
    )
    monkeypatch.undo()
    assert issuing.not_after == root.not_after
    assert (issuing.not_after - issuing.not_before) % timedelta(days=1)  # not whole days
    settings.KMS_PUBLIC_URL = NEW
    assert "Re-issued CA issuing" in reissue()
    fresh = CertificateAuthority.objects.get(pk=issuing.pk)
    assert (fresh.not_before, fresh.not_after) == (issuing.not_before, issuing.not_after)
