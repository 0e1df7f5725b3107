"""Concurrent audited actions from several processes on PostgreSQL: one tree, no fork, no
lost event, while sequencers in those processes race to integrate."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from audit.checking import audit_chain_check
from audit.models import AuditEvent, AuditLeaf, AuditTreeHead
from audit.sequencer import audit_integrate, proof_consistency
from kmsportal.crypto.merkle import verify_consistency

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
APPENDS = 120

CHILD = """
import django, sys
django.setup()
from django.db import transaction
from audit.models import AuditAction
from audit.sequencer import audit_integrate
from audit.services import audit_event_record
number = int(sys.argv[1])
for i in range({appends}):
    with transaction.atomic():
        audit_event_record(action=AuditAction.ACCESS_DENIED, target_type="test",
                           target_id=f"{{number}}-{{i}}", target_label=f"writer {{number}}")
    if i % 15 == number:
        audit_integrate(wait=False, full=i % 2 == 0)
"""


@pytest.mark.skipif(connection.vendor != "postgresql", reason="several processes need PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_writers_in_several_processes_give_one_tree_without_fork_or_loss() -> None:
    name = connection.settings_dict["NAME"]
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
    env = {
        **os.environ,
        "DATABASE_URL": base.rsplit("/", 1)[0] + "/" + name,
        "DJANGO_SETTINGS_MODULE": "kmsportal.settings",
        "KMS_AUDIT_SEQUENCER_INTERVAL": "0",
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD.format(appends=APPENDS), str(n)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    for child in children:
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
    audit_integrate()
    written = AuditEvent.objects.filter(target_type="test").count()
    assert written == PROCESSES * APPENDS
    # No lost event: every event is a leaf (except records written by the last run itself).
    audit_integrate()
    events = AuditEvent.objects.count()
    leaves = list(AuditLeaf.objects.order_by("leaf_index").values_list("leaf_index", flat=True))
    assert (
        leaves == list(range(events))
        or len(leaves) == events - AuditEvent.objects.filter(leaf__isnull=True).count()
    )
    assert not AuditEvent.objects.filter(target_type="test", leaf__isnull=True).exists()
    # No fork: every head extends the previous one.
    heads = list(AuditTreeHead.objects.order_by("tree_size").values_list("tree_size", "root_hash"))
    assert len(heads) > PROCESSES
    for (m, root_m), (n, root_n) in itertools.pairwise(heads):
        proof = proof_consistency(m, n)
        assert verify_consistency(m, n, bytes.fromhex(root_m), bytes.fromhex(root_n), proof)
    report = audit_chain_check()
    assert report.ok, report.problem
    assert report.heads_verified == len(heads)
