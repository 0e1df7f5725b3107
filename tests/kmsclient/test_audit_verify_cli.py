"""`python -m kmsclient audit-verify`: the offline check an outside auditor runs on an export."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kmsclient.cli import main
from kmsportal.crypto.audit_chain import (
    GENESIS_HASH,
    checkpoint_payload,
    checkpoint_sign,
    event_canonical_bytes,
    event_hash,
    export_checkpoint_line,
    export_event_line,
    export_header_line,
    export_public_key_line,
    format_time,
    public_key_to_pem,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 28, 14, 42, 19, 123456, tzinfo=UTC)


def build_export(key: Ed25519PrivateKey, n: int = 25, checkpoint_every: int = 10) -> list[str]:
    """A complete export of a synthetic log of n events with a checkpoint every few events."""
    lines = [export_header_line(exported_at=format_time(T0 + timedelta(days=1)), filters={})]
    checkpoint_lines = []
    prev = GENESIS_HASH
    previous_signature = ""
    for sequence in range(1, n + 1):
        event: dict[str, Any] = {
            "sequence": sequence,
            "time": format_time(T0 + timedelta(seconds=sequence)),
            "actor_type": "client" if sequence % 2 else "user",
            "actor_id": str(sequence),
            "actor_name": "Zoë" if sequence % 2 else "billing-service",
            "action": "key.fetch",
            "target_type": "symmetric_key",
            "target_id": "k-1",
            "target_label": "payments",
            "outcome": "success",
            "source_ip": "198.51.100.4",
            "request_id": f"r{sequence}",
            "details": {"version": 1},
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(prev, event_canonical_bytes(event))
        lines.append(export_event_line(event))
        if sequence % checkpoint_every == 0:
            time = format_time(T0 + timedelta(minutes=sequence))
            payload = checkpoint_payload(
                sequence=sequence, event_hash=prev, time=time, previous_signature=previous_signature
            )
            signature = checkpoint_sign(key, payload)
            checkpoint_lines.append(
                export_checkpoint_line(
                    {
                        "sequence": sequence,
                        "hash": prev,
                        "time": time,
                        "previous_signature": previous_signature,
                        "signature": signature,
                    }
                )
            )
            previous_signature = signature
    return [*lines, *checkpoint_lines, export_public_key_line(key.public_key())]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsclient", *args],
        cwd=PROJECT_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def good_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    return write(tmp_path / "audit.jsonl", build_export(key))


@pytest.fixture
def tampered_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    lines = build_export(key)
    event = json.loads(lines[7])  # line 8: event 7
    event["target_label"] = "test key"
    lines[7] = json.dumps(event, ensure_ascii=False)
    return write(tmp_path / "tampered.jsonl", lines)


# --- as a real process ----------------------------------------------------------------------


def test_good_export_exits_0(good_file: Path) -> None:
    proc = run_cli("audit-verify", str(good_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK: 25 events and 2 checkpoints verified (version 1 export)"


def test_modified_export_exits_1_naming_the_line(tampered_file: Path) -> None:
    proc = run_cli("audit-verify", str(tampered_file))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("TAMPERED: line 8: event 7: stored hash ")
    assert "(content altered)" in proc.stderr


def test_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("audit-verify", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reads_standard_input(good_file: Path) -> None:
    proc = run_cli("audit-verify", "-", stdin=good_file.read_text(encoding="utf-8"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: 25 events")


def test_trusted_public_key_option(good_file: Path, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    right = tmp_path / "right.pem"
    right.write_text(public_key_to_pem(key.public_key()), encoding="utf-8")
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(public_key_to_pem(Ed25519PrivateKey.generate().public_key()))

    proc = run_cli("audit-verify", str(good_file), "--public-key", str(right))
    assert proc.returncode == 0, proc.stderr
    assert "note:" not in proc.stderr  # the note about an untrusted key is only printed without it

    proc = run_cli("audit-verify", str(good_file), "--public-key", str(wrong))
    assert proc.returncode == 1
    assert "TAMPERED: line 29: " in proc.stderr
    assert "not the trusted public key" in proc.stderr


def test_importing_the_client_pulls_in_no_django() -> None:
    code = (
        "import sys, kmsclient.cli, kmsportal.crypto.audit_chain; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- in process (fast) ----------------------------------------------------------------------


def test_unreadable_public_key_file_exits_2(
    good_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit-verify", str(good_file), "--public-key", str(tmp_path / "x.pem")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_invalid_public_key_file_exits_2(
    good_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = tmp_path / "garbage.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    assert main(["audit-verify", str(good_file), "--public-key", str(pem)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_non_utf8_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b'{"type":"header"}\n\xff\xfe\x00garbage\n')
    assert main(["audit-verify", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_directory_instead_of_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit-verify", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_truncated_file_is_tampered(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "short.jsonl", build_export(key)[:20])
    assert main(["audit-verify", str(path)]) == 1
    assert "TAMPERED: line 20: " in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "audit-verify" in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-verify"]) == 2
    assert "FILE" in capsys.readouterr().err


def _rechain(lines: list[str]) -> list[str]:
    """Recompute every event's prev_hash and hash in order, as a forger would."""
    out, prev = [], GENESIS_HASH
    for line in lines:
        record = json.loads(line)
        if record.get("type") == "event":
            record["prev_hash"] = prev
            record["hash"] = prev = event_hash(prev, event_canonical_bytes(record))
            line = export_event_line(record)
        out.append(line)
    return out


def test_v1_export_without_checkpoints_is_refused_even_with_the_pinned_key(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Issue 14, point 4: a version 1 export of 40 events and no checkpoint, one event's
    reason edited and every hash recomputed, must not answer OK with the pinned key."""
    lines = build_export(key, n=40, checkpoint_every=1000)
    assert json.loads(lines[0])["version"] == 1
    assert not any(json.loads(line)["type"] == "checkpoint" for line in lines)
    event = json.loads(lines[10])
    event["action"] = "key.destruction_approved"
    event["details"] = {"reason": "approved by the second custodian"}
    lines[10] = export_event_line(event)
    original = _rechain(lines)
    event["details"] = {"reason": "edited by a database writer"}
    edited = _rechain([*original[:10], export_event_line(event), *original[11:]])
    assert edited[10] != original[10] and edited[-2] != original[-2]  # hashes recomputed
    pem = tmp_path / "audit-public.pem"
    pem.write_text(public_key_to_pem(key.public_key()))

    for name, content in (("original", original), ("edited", edited)):
        result = run_cli(
            "audit-verify", "--public-key", str(pem), str(write(tmp_path / name, content))
        )
        assert result.returncode == 1, (name, result.stdout)
        assert not result.stdout.startswith("OK")
        assert "TAMPERED: the version 1 export holds no signed checkpoint" in result.stderr
        assert "nothing in it is signed" in result.stderr
