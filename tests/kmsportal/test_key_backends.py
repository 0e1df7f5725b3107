"""The PKCS#11 key backend: what start-up refuses, what the token holds, what a request
sees when the token goes away. SoftHSM2 tokens throughout (tests/key_backends.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from accounts.roles import Role
from kmsportal.crypto.pkcs11_token import PRIVATE_KEY_LABEL, WRAP_KEY_LABEL, Pkcs11Token
from kmsportal.keyring.backends import key_backend
from kmsportal.keyring.backends.base import is_key_reference, is_wrapped_material
from kmsportal.keyring.services import keyring_get, keyring_reset, unseal
from pki import services as pki_services
from tests.key_backends import SoftHSM, init_token
from vault import services as vault_services

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def deployment_env(softhsm: SoftHSM, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = softhsm.env(
        DEBUG="false",
        SECRET_KEY="a-real-looking-secret-key-for-this-test-only-1234567890",
        KMS_DATA_DIR=str(tmp_path),
        KMS_MASTER_KEYS="",
        KMS_IDENTITY_CA_KEY_TYPE="ecp256",
        **extra,
    )
    env.pop("DATABASE_URL", None)  # a fresh SQLite database in tmp_path
    return env


@pytest.fixture
def fresh_token(softhsm: SoftHSM, tmp_path: Path) -> str:
    """A second, empty token in the session's SoftHSM2 directory."""
    label = f"fresh-{tmp_path.name[-20:]}"
    init_token(softhsm.conf, label, softhsm.pin)
    return label


@pytest.mark.slow
def test_migrate_and_bootstrap_on_an_empty_database_create_the_master_key_in_the_token(
    softhsm: SoftHSM, fresh_token: str, tmp_path: Path
) -> None:
    env = deployment_env(softhsm, tmp_path, KMS_PKCS11_TOKEN_LABEL=fresh_token)
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "keyring.W002" in migrate.stderr  # fresh: a warning, bootstrap makes the key
    boot = manage("bootstrap", env=env)
    assert boot.returncode == 0, boot.stderr
    assert (
        f"Created master key 'kmsportal-master-hsm1' (AES-256, non-extractable) in PKCS#11 token '{fresh_token}'"
        in boot.stdout
    )
    check = manage("check", "--deploy", "--fail-level", "ERROR", env=env)
    assert check.returncode == 0, check.stderr
    assert softhsm.pin not in boot.stdout + boot.stderr + check.stdout + check.stderr
    # The PIN from a file (as production should give it) instead of the environment.
    pin_file = tmp_path / "pkcs11-pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    from_file = manage(
        "check",
        "--deploy",
        "--fail-level",
        "ERROR",
        env={**env, "KMS_PKCS11_PIN": "", "KMS_PKCS11_PIN_FILE": str(pin_file)},
    )
    assert from_file.returncode == 0, from_file.stderr
    assert softhsm.pin not in from_file.stdout + from_file.stderr

    # The same database against a token that lacks the key: refused, the object named.
    other = f"{fresh_token}-b"[:32]
    init_token(softhsm.conf, other, softhsm.pin)
    missing = manage("check", env={**env, "KMS_PKCS11_TOKEN_LABEL": other})
    assert missing.returncode != 0
    assert "keyring.E005" in missing.stderr
    assert (
        f"master key object 'kmsportal-master-hsm1' is not in PKCS#11 token '{other}'"
        in missing.stderr
    )
    # A token that has an object of that name, but another key: the check value says so.
    # (In a separate process: SoftHSM2 lists only the tokens that existed when this process
    # initialised it.)
    impostor = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kmsportal.crypto.pkcs11_token import Pkcs11Token; "
            "Pkcs11Token(module=sys.argv[1], token_label=sys.argv[2], pin=sys.argv[3])"
            ".aes_key_create(label='kmsportal-master-hsm1')",
            softhsm.module,
            other,
            softhsm.pin,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert impostor.returncode == 0, impostor.stderr
    wrong = manage("check", env={**env, "KMS_PKCS11_TOKEN_LABEL": other})
    assert wrong.returncode != 0
    assert "keyring.E002" in wrong.stderr and "master key 'hsm1' does not match" in wrong.stderr

    # gunicorn loads kmsportal.wsgi: a wrong PIN stops it with the check's message.
    result = subprocess.run(
        [sys.executable, "-c", "import kmsportal.wsgi"],
        cwd=ROOT,
        env={**env, "KMS_PKCS11_PIN": "000000"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "kmsportal refuses to start" in result.stderr
    assert f"the PIN for PKCS#11 token '{fresh_token}' is wrong" in result.stderr
    assert "000000" not in result.stderr and softhsm.pin not in result.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"KMS_PKCS11_PIN": "999999"}, "the PIN for PKCS#11 token 'kmsportal-test' is wrong"),
        (
            {"KMS_PKCS11_TOKEN_LABEL": "no-such-token"},
            "PKCS#11 token 'no-such-token' is not present",
        ),
        (
            {"KMS_PKCS11_MODULE": "/nowhere/libp11.so"},
            "PKCS#11 module /nowhere/libp11.so does not exist",
        ),
        (
            {"KMS_PKCS11_PIN": "", "KMS_PKCS11_PIN_FILE": "/nowhere/pin"},
            "the PIN file /nowhere/pin cannot be read",
        ),
    ],
    ids=["wrong-pin", "missing-token", "missing-module", "unreadable-pin-file"],
)
def test_start_up_is_refused_naming_what_is_wrong(
    softhsm: SoftHSM, tmp_path: Path, override: dict[str, str], expected: str
) -> None:
    result = manage("check", env=deployment_env(softhsm, tmp_path, **override))
    assert result.returncode != 0
    assert "keyring.E004" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "999999" not in result.stderr and softhsm.pin not in result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("key_backend_name", ["pkcs11"], indirect=True)
def test_keys_in_the_token_are_non_extractable_and_the_database_holds_references(
    softhsm: SoftHSM, key_backend_name: str
) -> None:
    import pkcs11
    from pkcs11 import Attribute

    ca = pki_services.certificate_authority_create(
        actor=None, name="hsm-root", subject="CN=HSM Root", key_type="rsa2048"
    )
    key = vault_services.symmetric_key_create(actor=None, name="orders-db")
    version = key.versions.get()
    assert is_key_reference(unseal(bytes(ca.sealed_private_key), aad=ca.aad))
    assert is_wrapped_material(unseal(bytes(version.sealed_material), aad=version.aad))
    assert keyring_get().primary_key_id == "hsm1"

    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    with token.open() as session:  # this process is logged in already (the backend)
        for label, object_class in [
            ("kmsportal-master-hsm1", pkcs11.ObjectClass.SECRET_KEY),
            (PRIVATE_KEY_LABEL, pkcs11.ObjectClass.PRIVATE_KEY),
            (WRAP_KEY_LABEL, pkcs11.ObjectClass.SECRET_KEY),
        ]:
            objects = list(
                session.get_objects({Attribute.LABEL: label, Attribute.CLASS: object_class})
            )
            assert objects, label
            for obj in objects:
                assert obj[Attribute.SENSITIVE] is True and obj[Attribute.EXTRACTABLE] is False
                with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                    # The key's value (RSA: its private exponent) never leaves the token.
                    secret = (
                        Attribute.PRIVATE_EXPONENT
                        if object_class == pkcs11.ObjectClass.PRIVATE_KEY
                        else Attribute.VALUE
                    )
                    obj[secret]


@pytest.mark.django_db
def test_a_token_that_goes_away_gives_a_clear_page_not_a_traceback(
    softhsm: SoftHSM, settings, make_user, signed_in
) -> None:
    custodian = signed_in(make_user("kim-custodian", Role.KEY_CUSTODIAN))
    # The token this process was using is no longer there (another label: nothing answers).
    settings.KMS_KEY_BACKENDS = {
        **settings.KMS_KEY_BACKENDS,
        "default": softhsm.backend_config(TOKEN_LABEL="unplugged-token"),
    }
    keyring_reset()
    try:
        response = custodian.post(
            "/keys/new/", {"name": "orders-db", "description": "", "rotation_period_days": ""}
        )
        assert response.status_code == 503
        page = response.content.decode()
        assert "Key store unavailable" in page and "Nothing was changed" in page
        assert "Traceback" not in page and softhsm.pin not in page
    finally:
        keyring_reset()
    from vault.models import SymmetricKey

    assert not SymmetricKey.objects.filter(name="orders-db").exists()


@pytest.mark.django_db
def test_a_token_that_goes_away_gives_the_admin_api_a_problem_document(
    softhsm: SoftHSM, settings, make_user
) -> None:
    from tests.adminapi.conftest import bearer
    from vault.models import SymmetricKey

    api = bearer(make_user("kim-custodian", Role.KEY_CUSTODIAN))
    settings.KMS_KEY_BACKENDS = {
        **settings.KMS_KEY_BACKENDS,
        "default": softhsm.backend_config(TOKEN_LABEL="unplugged-token"),
    }
    keyring_reset()
    try:
        response = api.post(
            "/api/v1/admin/keys", {"name": "orders-db"}, content_type="application/json"
        )
    finally:
        keyring_reset()
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["code"]) == (503, "token_failed")
    assert "PKCS#11 token 'unplugged-token' is not present" in problem["detail"]
    assert softhsm.pin not in response.content.decode()
    assert not SymmetricKey.objects.filter(name="orders-db").exists()


def test_a_second_token_object_logs_in_once_per_process(softhsm: SoftHSM) -> None:
    # Two backends in one process (keyring_reset, tests) share the token's login state.
    first = Pkcs11Token(module=softhsm.module, token_label=softhsm.token_label, pin=softhsm.pin)
    second = Pkcs11Token(module=softhsm.module, token_label=softhsm.token_label, pin=softhsm.pin)
    first.connect()
    second.connect()
    assert second.has_object(label="kmsportal-master-hsm1") == first.has_object(
        label="kmsportal-master-hsm1"
    )
    assert key_backend().name == "software"
