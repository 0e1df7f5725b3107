"""The sequencer runs by itself in the web process: heads appear without cron."""

from __future__ import annotations

import time

import pytest

from audit.checking import audit_chain_check
from audit.models import AuditEvent, AuditTreeHead
from audit.sequencer import sequencer_thread_stop

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_the_first_request_starts_the_sequencer_and_heads_follow(client, settings) -> None:
    settings.KMS_AUDIT_SEQUENCER_INTERVAL = 0.2
    try:
        client.get("/accounts/login/")
        client.post("/accounts/login/", {"username": "nobody", "password": "wrong-password"})
        assert AuditEvent.objects.exists()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            head = AuditTreeHead.objects.order_by("-tree_size").first()
            if (
                head is not None
                and head.tree_size
                >= AuditEvent.objects.filter(action="auth.sign_in_failed").count()
            ):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no signed tree head within 20 s")
    finally:
        sequencer_thread_stop()
    report = audit_chain_check()
    assert report.ok and report.heads_verified >= 1, report.problem


def test_the_thread_is_off_when_the_interval_is_zero(client, settings) -> None:
    settings.KMS_AUDIT_SEQUENCER_INTERVAL = 0
    client.post("/accounts/login/", {"username": "nobody", "password": "wrong-password"})
    time.sleep(0.5)
    assert not AuditTreeHead.objects.exists()
