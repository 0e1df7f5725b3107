"""Signed checkpoints and the sealed audit signing key."""

from __future__ import annotations

import base64
import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from audit.models import AuditCheckpoint, AuditSigningKey
from audit.services import audit_chain_check, audit_signing_key_ensure
from kmsportal.checks import check_master_keyring
from kmsportal.crypto.audit_chain import checkpoint_payload, checkpoint_verify, public_key_from_pem
from kmsportal.crypto.envelope import EnvelopeIntegrityError
from kmsportal.keyring.services import keyring_reset, unseal
from tests.audit.helpers import append_events

pytestmark = pytest.mark.django_db


def test_checkpoints_are_signed_automatically_every_n_events(settings) -> None:
    settings.AUDIT_CHECKPOINT_EVERY = 5
    append_events(12)
    sequences = list(
        AuditCheckpoint.objects.order_by("sequence").values_list("sequence", flat=True)
    )
    # The signing key is created (and audited) at the first checkpoint; checkpoints land
    # on every fifth sequence of the whole log.
    assert sequences and all(s % 5 == 0 for s in sequences)
    assert audit_chain_check().ok


def test_checkpoint_command_is_idempotent_and_chains_signatures(settings) -> None:
    settings.AUDIT_CHECKPOINT_EVERY = 0
    append_events(3)
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert "Signed checkpoint at event" in out.getvalue()
    first = AuditCheckpoint.objects.get()
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)  # only the checkpoint's own event is new
    second = AuditCheckpoint.objects.order_by("-sequence").first()
    assert second.previous_signature == first.signature
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    call_command("audit_checkpoint", stdout=out)
    assert first.previous_signature == ""
    key = public_key_from_pem(AuditSigningKey.objects.get().public_key_pem)
    for checkpoint in AuditCheckpoint.objects.all():
        fields = checkpoint.chain_fields()
        payload = checkpoint_payload(
            sequence=fields["sequence"],
            event_hash=fields["hash"],
            time=fields["time"],
            previous_signature=fields["previous_signature"],
        )
        assert checkpoint_verify(key, payload, fields["signature"])
    assert audit_chain_check().ok


def test_checkpoint_command_with_nothing_new_signs_nothing(settings) -> None:
    settings.AUDIT_CHECKPOINT_EVERY = 0
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert "nothing signed" in out.getvalue()
    assert not AuditCheckpoint.objects.exists()


def test_signing_key_is_sealed_and_bound_to_its_row(db) -> None:
    key, created = audit_signing_key_ensure()
    assert created
    assert audit_signing_key_ensure() == (key, False)
    raw = unseal(key.sealed_private_key, aad=key.aad)
    assert len(raw) == 32
    assert raw not in bytes(key.sealed_private_key)
    private = Ed25519PrivateKey.from_private_bytes(raw)
    assert (
        public_key_from_pem(key.public_key_pem).public_bytes_raw()
        == private.public_key().public_bytes_raw()
    )
    other = AuditSigningKey(public_key_pem="")
    with pytest.raises(EnvelopeIntegrityError):
        unseal(key.sealed_private_key, aad=other.aad)


def test_removing_the_master_key_that_seals_the_signing_key_is_refused(settings) -> None:
    old = "k1:" + base64.b64encode(b"1" * 32).decode()
    new = "k2:" + base64.b64encode(b"2" * 32).decode()
    settings.KMS_MASTER_KEYS = old
    keyring_reset()
    try:
        audit_signing_key_ensure()  # sealed under k1
        settings.KMS_MASTER_KEYS = f"{new},{old}"
        keyring_reset()
        assert check_master_keyring() == []
        settings.KMS_MASTER_KEYS = new  # k1 dropped while it still seals the key
        keyring_reset()
        errors = check_master_keyring()
        assert [e.id for e in errors] == ["keyring.E003"]
        assert "master key 'k1' was removed" in errors[0].msg
        assert "1 stored blob" in errors[0].msg
        assert "rewrap" in errors[0].hint
    finally:
        keyring_reset()
