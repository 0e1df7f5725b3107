"""`keyring_migrate --to pkcs11`: a deployment made with the software backend moves into the
SoftHSM2 token: every blob under the token's master key, each key version under a wrapping
key of its own, CA keys as token objects that still sign; resumable and audited."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from kmsportal.crypto.symmetric import key_check_value
from kmsportal.keyring.backends.base import is_key_reference, is_wrapped_material
from kmsportal.keyring.services import (
    keyring_get,
    keyring_migrate_to_token,
    keyring_reset,
    sealed_blob_counts,
    unseal,
    unseal_material,
)
from pki import services as pki_services
from pki.models import CertificateAuthority
from pki.signers import ca_signer_cache_clear
from tests.key_backends import SoftHSM
from tests.pki.conftest import csr_pem
from vault import services as vault_services
from vault.models import KeyVersion

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def software_deployment(db):
    root = pki_services.certificate_authority_create(
        actor=None, name="root", subject="CN=Root", key_type="ecp256"
    )
    issuing = pki_services.certificate_authority_create(
        actor=None, name="issuing", subject="CN=Issuing", parent=root, key_type="rsa2048"
    )
    for name in ("orders-db", "billing", "payroll"):
        key = vault_services.symmetric_key_create(actor=None, name=name)
        vault_services.symmetric_key_rotate(actor=None, key=key)
    return root, issuing


def switch_to_token(settings, softhsm: SoftHSM) -> None:
    """KMS_KEY_BACKEND=pkcs11 with KMS_MASTER_KEYS still set (it only unseals now)."""
    settings.KMS_KEY_BACKENDS = {**settings.KMS_KEY_BACKENDS, "default": softhsm.backend_config()}
    keyring_reset()
    ca_signer_cache_clear()
    from kmsportal.keyring.backends import key_backend

    key_backend().prepare()


def test_migrate_moves_everything_into_the_token_and_nothing_breaks(
    software_deployment, settings, softhsm: SoftHSM
) -> None:
    _root, issuing = software_deployment
    fingerprints = dict(KeyVersion.objects.values_list("pk", "fingerprint"))
    assert "test1" in sealed_blob_counts()
    with pytest.raises(CommandError, match="needs KMS_KEY_BACKEND=pkcs11"):
        run("keyring_migrate", "--to", "pkcs11")

    switch_to_token(settings, softhsm)
    # Interrupted after its first batch: the finished batch stays, the rest waits.
    progress = keyring_migrate_to_token(batch_size=2)
    first = next(progress)
    progress.close()
    # One batch: at most two rows of one sealed field (which field comes first depends on
    # the registry's order: the audit log's MAC key is one row).
    assert 1 <= first.resealed <= 2
    out = run("keyring_migrate", "--to", "pkcs11", "--batch", "2")
    assert "Nothing is sealed under the software keys any more" in out

    assert set(sealed_blob_counts()) == {"hsm1"}
    for version in KeyVersion.objects.all():
        payload = unseal(bytes(version.sealed_material), aad=version.aad)
        assert is_wrapped_material(payload)
        material = unseal_material(bytes(version.sealed_material), aad=version.aad)
        assert key_check_value(material) == fingerprints[version.pk]
    for ca in CertificateAuthority.objects.all():
        assert is_key_reference(unseal(bytes(ca.sealed_private_key), aad=ca.aad))
    events = AuditEvent.objects.filter(action="keyring.migrated")
    assert events.count() >= 4
    assert sum(e.details["private_keys_moved"] for e in events) == 2
    assert sum(e.details["wrapping_keys_created"] for e in events) == 6
    assert run("keyring_migrate", "--to", "pkcs11").startswith("Moved 0 row(s)")

    # Without the software keys everything still works: the token holds what is needed.
    settings.KMS_MASTER_KEYS = ""
    keyring_reset()
    ca_signer_cache_clear()
    assert keyring_get().key_ids == ("hsm1",)
    issuing = CertificateAuthority.objects.get(name="issuing")
    record = pki_services.certificate_issue_from_csr(
        actor=None,
        ca=issuing,
        csr_pem_or_der=csr_pem(ec.generate_private_key(ec.SECP256R1())),
        profile="tls-server",
    )
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    certificate.verify_directly_issued_by(
        x509.load_pem_x509_certificate(issuing.certificate_pem.encode())
    )
    assert all(
        r.ok
        for key in vault_services.SymmetricKey.objects.all()
        for r in vault_services.key_material_verify(actor=None, key=key)
    )
    keyring_reset()
