"""Exports end with a signed head; `kmsclient audit-verify` checks inclusion, the head, and
consistency with a head the auditor saved earlier (the tamper kinds only an outside copy
can reveal: truncation with head removal, a rewritten history, a cut tail)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditSigningKey
from kmsclient.cli import main
from tests.audit.helpers import append_events, raw_tampering

pytestmark = pytest.mark.django_db


def _export(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    call_command("audit_export", "--out", str(out), *args, stderr=io.StringIO())
    return out


def _head(tmp_path: Path, name: str = "head.json") -> Path:
    out = io.StringIO()
    call_command("audit_head", stdout=out)
    path = tmp_path / name
    path.write_text(out.getvalue().splitlines()[0])
    return path


def _audit_head(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("audit_head", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_audit_head_prints_a_consistency_proof_from_a_saved_size(tmp_path) -> None:
    """`manage.py audit_head --consistency-from M`: the newest signed head, then the proof
    that the tree of M leaves (a head saved earlier) is its prefix, checked here with the
    RFC 9162 reference verifier of the Merkle tests and the pinned key."""
    from kmsportal.crypto.audit_log import key_id, public_key_from_text, tree_head_from_json
    from tests.crypto.test_merkle import ref_verify_consistency

    append_events(6)
    (saved,) = _audit_head()
    append_events(5)
    head, consistency = _audit_head("--consistency-from", str(saved["tree_size"]))
    m, n = saved["tree_size"], head["tree_size"]
    assert 0 < m < n
    assert consistency == {
        "type": "consistency",
        "from_size": m,
        "to_size": n,
        "proof": consistency["proof"],
    }
    proof = [bytes.fromhex(p) for p in consistency["proof"]]
    assert proof
    old_root, new_root = bytes.fromhex(saved["root_hash"]), bytes.fromhex(head["root_hash"])
    assert ref_verify_consistency(m, n, old_root, new_root, proof)
    # The proof is for that size and that head only.
    assert not ref_verify_consistency(m - 1, n, old_root, new_root, proof)
    assert not ref_verify_consistency(m, n, new_root, new_root, proof)
    # Both heads are signed by the portal's (pinned) audit key.
    public = public_key_from_text(AuditSigningKey.objects.get().public_key_pem)
    for signed in (saved, head):
        assert tree_head_from_json(signed).verify({key_id(public): public}) is None

    # Nothing new: the same head, and an empty proof from its own size or from 0.
    again, same = _audit_head("--consistency-from", str(n))
    assert again == head and same["proof"] == [] and same["from_size"] == n
    assert _audit_head("--consistency-from", "0")[1]["proof"] == []


@pytest.mark.parametrize("size", ["-1", "1000000"])
def test_audit_head_refuses_a_consistency_size_outside_the_tree(size: str) -> None:
    from django.core.management.base import CommandError

    append_events(3)
    with pytest.raises(CommandError, match="--consistency-from must be between 0 and"):
        call_command("audit_head", "--consistency-from", size, stdout=io.StringIO())


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "audit.pem"
    path.write_text(AuditSigningKey.objects.get().public_key_pem)
    return path


def _verify(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["audit-verify", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_fresh_export_verifies_with_the_pinned_key_and_a_saved_head(tmp_path, capsys) -> None:
    append_events(7)
    saved = _head(tmp_path)
    append_events(5)
    export = _export(tmp_path, "all.jsonl")
    lines = export.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "tree_head"
    code, out, err = _verify(
        capsys, str(export), "--public-key", str(_key(tmp_path)), "--trusted-head", str(saved)
    )
    assert code == 0, err
    assert out.startswith("OK:") and "consistent with the trusted head" in out


def test_export_tail_cut_fails(tmp_path, capsys) -> None:
    append_events(6)
    export = _export(tmp_path, "all.jsonl")
    lines = export.read_text().splitlines()
    for cut in (lines[:-1], lines[:-3], [*lines[:-4], *lines[-2:]]):
        export.write_text("\n".join(cut) + "\n")
        code, _, err = _verify(capsys, str(export), "--public-key", str(_key(tmp_path)))
        assert code == 1 and err.startswith("TAMPERED"), err


def test_export_without_any_head_fails_saying_so(tmp_path, capsys) -> None:
    append_events(3)
    export = _export(tmp_path, "all.jsonl")
    lines = [ln for ln in export.read_text().splitlines() if '"type":"tree_head"' not in ln]
    export.write_text("\n".join(lines) + "\n")
    code, out, err = _verify(capsys, str(export))
    assert code == 1 and out == ""
    assert "does not end with a signed tree head" in err and "nothing in it is signed" in err


def test_edited_event_with_recomputed_hashes_fails_with_the_pinned_key(tmp_path, capsys) -> None:
    """An insider edits a reason in the export and re-signs the head with a key of their own:
    only the pinned key tells."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kmsportal.crypto.audit_log import event_entry, export_public_key_line, tree_head_sign
    from kmsportal.crypto.merkle import Frontier as Tree
    from kmsportal.crypto.merkle import leaf_hash

    append_events(5)
    export = _export(tmp_path, "all.jsonl")
    lines = export.read_text().splitlines()
    events = [json.loads(ln) for ln in lines if '"type":"event"' in ln]
    events[2]["details"] = {"reason": "edited"}
    tree = Tree()
    for event in events:
        tree.append(leaf_hash(event_entry(event)))
    mallory = Ed25519PrivateKey.generate()
    head = tree_head_sign(
        mallory,
        tree_size=tree.size,
        root_hash=tree.root().hex(),
        timestamp="2026-12-01T00:00:00.000000Z",
    )
    forged = [
        lines[0],
        *(json.dumps(e) for e in events),
        export_public_key_line(mallory.public_key()),
        head.line(),
    ]
    export.write_text("\n".join(forged) + "\n")
    code, _, _ = _verify(capsys, str(export))  # self-consistent without a pinned key
    assert code == 0
    code, _, err = _verify(capsys, str(export), "--public-key", str(_key(tmp_path)))
    assert code == 1 and "not a trusted audit key" in err


def _rebuild_tree_as_a_key_holder() -> None:
    """What an insider holding the keyring AND the tables can do: drop the tree and its heads,
    fix up MACs and leaf hashes, and have the sequencer sign a fresh tree."""
    from audit.models import AuditEvent
    from audit.sequencer import audit_integrate
    from audit.services import audit_mac_keys_by_id
    from kmsportal.crypto.audit_log import event_entry, event_mac
    from kmsportal.crypto.merkle import leaf_hash

    with raw_tampering() as cursor:
        for table in ("auditleaf", "audittreenode", "audittreehead", "auditrejectedevent"):
            cursor.execute(f"DELETE FROM audit_{table}")
        events = list(AuditEvent.objects.all())
        keys = audit_mac_keys_by_id({str(e.mac_key_id) for e in events})
        for event in events:
            entry = event_entry(event.chain_fields())
            cursor.execute(
                "UPDATE audit_auditevent SET hash = %s, mac = %s WHERE sequence = %s",
                [
                    leaf_hash(entry).hex(),
                    event_mac(keys[str(event.mac_key_id)], entry),
                    event.sequence,
                ],
            )
    audit_integrate()


def test_rewritten_history_before_a_saved_head_fails(tmp_path, capsys) -> None:
    events = append_events(8)
    saved = _head(tmp_path)
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'rewritten' WHERE sequence = %s",
            [events[2].sequence],
        )
    _rebuild_tree_as_a_key_holder()
    export = _export(tmp_path, "all.jsonl")
    key = str(_key(tmp_path))
    code, _, err = _verify(capsys, str(export), "--public-key", key)
    assert code == 0, err  # signed with the real key: only the saved head can tell
    code, _, err = _verify(capsys, str(export), "--public-key", key, "--trusted-head", str(saved))
    assert code == 1 and "the log was rewritten" in err


def test_truncation_with_head_removal_is_caught_by_the_saved_head(tmp_path, capsys) -> None:
    append_events(10)
    saved = _head(tmp_path)
    with raw_tampering() as cursor:
        cursor.execute("DELETE FROM audit_auditleaf WHERE leaf_index >= 6")
        cursor.execute(
            "DELETE FROM audit_auditevent WHERE sequence NOT IN "
            "(SELECT event_id FROM audit_auditleaf)"
        )
    _rebuild_tree_as_a_key_holder()
    export = _export(tmp_path, "all.jsonl")
    key = str(_key(tmp_path))
    assert _verify(capsys, str(export), "--public-key", key)[0] == 0
    code, _, err = _verify(capsys, str(export), "--public-key", key, "--trusted-head", str(saved))
    assert code == 1 and "the log was truncated" in err


def test_filtered_export_with_a_consistency_proof(tmp_path, capsys) -> None:
    append_events(5, label="keep")
    saved = _head(tmp_path)
    append_events(5, label="other")
    size = json.loads(saved.read_text())["tree_size"]
    export = _export(tmp_path, "keep.jsonl", "--text", "keep", "--trusted-size", str(size))
    code, _out, err = _verify(
        capsys, str(export), "--public-key", str(_key(tmp_path)), "--trusted-head", str(saved)
    )
    assert code == 0, err
    no_proof = _export(tmp_path, "keep2.jsonl", "--text", "keep")
    code, _, err = _verify(capsys, str(no_proof), "--trusted-head", str(saved))
    assert code == 1 and "no consistency proof" in err


def test_a_forged_saved_head_is_refused(tmp_path, capsys) -> None:
    append_events(3)
    saved = _head(tmp_path)
    head = json.loads(saved.read_text())
    head["root_hash"] = "00" * 32
    saved.write_text(json.dumps(head))
    export = _export(tmp_path, "all.jsonl")
    code, _, err = _verify(
        capsys, str(export), "--public-key", str(_key(tmp_path)), "--trusted-head", str(saved)
    )
    assert code == 1 and "trusted head" in err
