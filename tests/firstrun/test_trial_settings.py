"""`make run`'s trial settings (kmsportal.trial) and `manage.py` in a new shell."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kmsportal.trial import public_url_from_bind, read_env_file, trial_settings_write

ROOT = Path(__file__).resolve().parents[2]
#: What conftest.py puts in the environment; a new shell has none of it.
TEST_VARIABLES = (
    "SECRET_KEY",
    "KMS_MASTER_KEYS",
    "KMS_DATA_DIR",
    "STATIC_ROOT",
    "KMS_PUBLIC_URL",
    "ALLOWED_HOSTS",
    "DEBUG",
    "DATABASE_URL",
    "CACHE_URL",
    "GUNICORN_BIND",
    "DJANGO_SETTINGS_MODULE",
)


def new_shell_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TEST_VARIABLES}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1:18100", "http://127.0.0.1:18100"),
        ("localhost:9000", "http://localhost:9000"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("[::1]:8443", "http://[::1]:8443"),
        ("kms.internal:8000,127.0.0.1:9", "http://kms.internal:8000"),
    ],
)
def test_public_url_follows_the_bind_address(bind: str, url: str) -> None:
    assert public_url_from_bind(bind) == url


def test_a_unix_socket_needs_an_explicit_public_url() -> None:
    with pytest.raises(ValueError, match="KMS_PUBLIC_URL"):
        public_url_from_bind("unix:/run/kms.sock")


def test_trial_file_is_private_and_keeps_its_secrets(tmp_path: Path) -> None:
    env = {"KMS_DATA_DIR": str(tmp_path), "GUNICORN_BIND": "127.0.0.1:18100"}
    path = trial_settings_write(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_env_file(path)
    assert first["DEBUG"] == "false"  # the portal's own error pages, never debug pages
    assert first["KMS_PUBLIC_URL"] == "http://127.0.0.1:18100"
    assert len(first["SECRET_KEY"]) >= 50
    assert first["KMS_MASTER_KEYS"].startswith("dev1:")
    assert stat.S_IMODE((tmp_path / "master.keys").stat().st_mode) == 0o600
    # The tour's second custodian approves a minute after setting up, not a day (said loudly
    # by `make run`); an explicit setting wins.
    assert first["KMS_APPROVER_COOLING_OFF"] == "60"
    explicit = read_env_file(trial_settings_write({**env, "KMS_APPROVER_COOLING_OFF": "86400"}))
    assert explicit["KMS_APPROVER_COOLING_OFF"] == "86400"

    # Another port later: the URL follows, the secret and the keyring stay.
    second = read_env_file(trial_settings_write({**env, "GUNICORN_BIND": "127.0.0.1:18200"}))
    assert second["KMS_PUBLIC_URL"] == "http://127.0.0.1:18200"
    assert (second["SECRET_KEY"], second["KMS_MASTER_KEYS"]) == (
        first["SECRET_KEY"],
        first["KMS_MASTER_KEYS"],
    )
    # An explicit KMS_PUBLIC_URL wins over the bind address.
    third = read_env_file(trial_settings_write({**env, "KMS_PUBLIC_URL": "http://kms.lan:80/"}))
    assert third["KMS_PUBLIC_URL"] == "http://kms.lan:80"
    assert "kms.lan" in third["ALLOWED_HOSTS"].split(",")


def test_the_secret_of_an_earlier_debug_trial_is_kept(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("kept-from-an-earlier-run-" + "x" * 40)
    values = read_env_file(trial_settings_write({"KMS_DATA_DIR": str(tmp_path)}))
    assert values["SECRET_KEY"] == "kept-from-an-earlier-run-" + "x" * 40


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manage_py_in_a_new_shell_reads_the_trial_settings(tmp_path: Path) -> None:
    trial_settings_write({"KMS_DATA_DIR": str(tmp_path), "GUNICORN_BIND": "127.0.0.1:18123"})
    env = new_shell_environment(KMS_DATA_DIR=str(tmp_path))
    result = manage("diffsettings", "--all", env=env)
    assert result.returncode == 0, result.stderr
    assert "KMS_PUBLIC_URL = 'http://127.0.0.1:18123'" in result.stdout
    assert "DEBUG = False" in result.stdout
    assert "SESSION_COOKIE_SECURE = False" in result.stdout


def test_without_trial_settings_the_missing_secret_is_one_line(tmp_path: Path) -> None:
    env = new_shell_environment(KMS_DATA_DIR=str(tmp_path))
    result = manage("check", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: SECRET_KEY is not set")
    assert "make run" in lines[0]
