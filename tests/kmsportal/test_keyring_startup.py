"""Start-up checks of the master keyring: each failure stops start-up with its message."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmsportal.checks import check_master_keyring
from kmsportal.keyring.models import MasterKeyRecord
from kmsportal.keyring.services import keyring_reset, master_key_records_sync, seal, unseal

ROOT = Path(__file__).resolve().parents[2]
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


@pytest.fixture
def keys(settings):
    """Set KMS_MASTER_KEYS for one test and reload the process keyring around it."""

    def configure(spec: str) -> None:
        settings.KMS_MASTER_KEYS = spec
        keyring_reset()

    yield configure
    keyring_reset()


def messages(spec_errors: list) -> list[str]:
    return [f"{m.id}: {m.msg}" for m in spec_errors]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("k1:not*base64", "key 'k1' is not valid base64"),
        (f"k1:{base64.b64encode(b'x' * 16).decode()}", "key 'k1' is 16 bytes, expected 32"),
        (f"k1:{KEY_A},k1:{KEY_B}", "duplicate key id 'k1'"),
        (f":{KEY_A}", "empty key id"),
        (" , ", "KMS_MASTER_KEYS"),
    ],
)
def test_malformed_master_keys_fail_the_check(keys, spec: str, expected: str, db) -> None:
    keys(spec)
    found = messages(check_master_keyring())
    assert len(found) == 1
    assert found[0].startswith("keyring.E001")
    assert expected in found[0]
    assert KEY_A not in found[0] and KEY_B not in found[0]


def test_production_without_master_keys_fails(keys, settings, db) -> None:
    settings.DEBUG = False
    keys("")
    found = messages(check_master_keyring())
    assert found and "KMS_MASTER_KEYS is not set" in found[0]


def test_good_keyring_passes(keys, db) -> None:
    keys(f"k2:{KEY_B},k1:{KEY_A}")
    assert check_master_keyring() == []


def test_wrong_key_for_a_recorded_id_names_the_id(keys, db) -> None:
    keys(f"k1:{KEY_A}")
    master_key_records_sync()
    keys(f"k1:{KEY_B}")  # same id, different key
    found = messages(check_master_keyring())
    assert len(found) == 1
    assert "keyring.E002" in found[0]
    assert "master key 'k1' does not match" in found[0]


def test_seal_records_the_check_value_and_round_trips(keys, db) -> None:
    keys(f"k1:{KEY_A}")
    blob = seal(b"secret material", aad=b"test:row:1")
    assert MasterKeyRecord.objects.filter(key_id="k1").exists()
    assert unseal(blob, aad=b"test:row:1") == b"secret material"


def test_removing_an_unused_old_id_is_allowed(keys, db) -> None:
    keys(f"k2:{KEY_B},k1:{KEY_A}")
    master_key_records_sync()
    keys(f"k2:{KEY_B}")
    assert check_master_keyring() == []


def manage(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update(
        DEBUG="false",
        SECRET_KEY="a-real-looking-secret-key-for-this-test-only-1234567890",
        KMS_DATA_DIR=str(tmp_path),
        KMS_MASTER_KEYS=f"k1:{KEY_A}",
    )
    env.update(overrides)
    return env


@pytest.mark.parametrize("secret", ["", "change-me", "django-insecure-abc"])
def test_production_refuses_missing_or_placeholder_secret_key(tmp_path: Path, secret: str) -> None:
    result = manage("check", env=base_env(tmp_path, SECRET_KEY=secret))
    assert result.returncode != 0
    assert "SECRET_KEY is not set (or is a placeholder)" in result.stderr


def test_malformed_master_keys_stop_manage_check(tmp_path: Path) -> None:
    result = manage("check", env=base_env(tmp_path, KMS_MASTER_KEYS="k9:@@@"))
    assert result.returncode != 0
    assert "keyring.E001" in result.stderr
    assert "key 'k9' is not valid base64" in result.stderr


def test_wrong_master_key_stops_migrate_and_wsgi(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    assert manage("migrate", "--noinput", env=env).returncode == 0
    assert manage("bootstrap", env=env).returncode == 0
    wrong = base_env(tmp_path, KMS_MASTER_KEYS=f"k1:{KEY_B}")
    result = manage("migrate", "--noinput", env=wrong)
    assert result.returncode != 0
    assert "master key 'k1' does not match" in result.stderr
    # gunicorn loads kmsportal.wsgi: the same check refuses to serve.
    result = subprocess.run(
        [sys.executable, "-c", "import kmsportal.wsgi"],
        cwd=ROOT,
        env=wrong,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "kmsportal refuses to start" in result.stderr
    assert "master key 'k1' does not match" in result.stderr
    assert KEY_B not in result.stderr


@pytest.mark.django_db
def test_https_redirect_spares_what_relying_parties_fetch_over_http(settings) -> None:
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/accounts/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
    for path in ["/pki/crl/nope.crl", "/pki/ca/nope.crt", "/pki/ocsp/nope"]:
        assert client.get(path).status_code != 301, path
