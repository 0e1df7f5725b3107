"""Audit key rotation is recorded in the log itself and handed over by the old key."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from audit.checking import audit_chain_check
from audit.models import AuditEvent, AuditSigningKey, AuditTreeHead
from audit.sequencer import audit_integrate
from kmsclient.cli import main
from tests.audit.helpers import append_events

pytestmark = pytest.mark.django_db


def test_rotation_is_recorded_and_signed_by_the_old_key(tmp_path, capsys) -> None:
    append_events(3)
    audit_integrate()
    old = AuditSigningKey.objects.get()
    out = io.StringIO()
    call_command("audit_rotate_key", stdout=out)
    new = AuditSigningKey.objects.exclude(pk=old.pk).get()
    record = AuditEvent.objects.get(action="audit.signing_key_rotated")
    assert record.details["previous_key_id"] and record.details["key_id"] in out.getvalue()
    handover = AuditTreeHead.objects.order_by("-tree_size").first()
    assert handover.signing_key_id == old.pk  # the head covering the record: the old key
    append_events(2)
    head = audit_integrate().head
    assert head.signing_key_id == new.pk
    report = audit_chain_check()
    assert report.ok, report.problem
    # Offline: both keys given, an export verifies.
    export = tmp_path / "all.jsonl"
    call_command("audit_export", "--out", str(export), stderr=io.StringIO())
    keys = []
    for n, row in enumerate((old, new)):
        path = tmp_path / f"k{n}.pem"
        path.write_text(row.public_key_pem)
        keys += ["--public-key", str(path)]
    assert main(["audit-verify", str(export), *keys]) == 0
    assert json.loads(export.read_text().splitlines()[-1])["key_id"] == record.details["key_id"]


def test_a_key_never_introduced_by_a_rotation_record_is_refused() -> None:
    """A second key that appears without a rotation record (e.g. created by a buggy or
    hostile code path holding the keyring): heads it signs are refused."""
    from django.db import transaction

    from audit.models import AuditAction
    from audit.services import _signing_key_create

    append_events(2)
    audit_integrate()
    with transaction.atomic():
        _signing_key_create(action=AuditAction.AUDIT_SIGNING_KEY_CREATED, actor=None)
    audit_integrate()
    report = audit_chain_check()
    assert not report.ok
    assert "no rotation record" in report.problem
