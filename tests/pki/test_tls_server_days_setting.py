"""KMS_TLS_SERVER_MAX_DAYS at start-up: the tls-server profile's longest validity (default
200 days, the CA/Browser Forum maximum since March 2026), 1 to 398 days or start-up is refused
naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOW = "from kmsportal.crypto.profiles import PROFILES; print(PROFILES['tls-server'].max_validity_days)"


def manage(tmp_path: Path, *args: str, days: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_", "DATABASE_URL"))}
    env.update(DEBUG="true", KMS_DATA_DIR=str(tmp_path))
    if days is not None:
        env["KMS_TLS_SERVER_MAX_DAYS"] = days
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(("days", "expected"), [(None, "200"), ("90", "90"), ("398", "398")])
def test_the_setting_sets_the_tls_server_maximum(
    tmp_path: Path, days: str | None, expected: str
) -> None:
    done = manage(tmp_path, "shell", "-c", SHOW, days=days)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("days", ["0", "399"])
def test_a_value_out_of_range_refuses_start_up(tmp_path: Path, days: str) -> None:
    done = manage(tmp_path, "check", days=days)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: KMS_TLS_SERVER_MAX_DAYS: the tls-server maximum validity must be "
        f"1 to 398 days, not {days}"
    )
    assert "Traceback" not in done.stderr
