"""`bootstrap` and `createuser`, run as management commands against the real database."""

from __future__ import annotations

import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.roles import Role, user_roles
from kmsportal.keyring.models import MasterKeyRecord
from kmsportal.keyring.services import keyring_reset

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def dev_keyring(settings, tmp_path: Path):
    """DEBUG on and no KMS_MASTER_KEYS: the development keyring file is used."""
    settings.DEBUG = True
    settings.KMS_MASTER_KEYS = ""
    settings.KMS_MASTER_KEYS_FILE = tmp_path / "data" / "master.keys"
    keyring_reset()
    yield settings.KMS_MASTER_KEYS_FILE
    keyring_reset()


def test_bootstrap_writes_dev_keyring_and_first_admin_once(dev_keyring: Path) -> None:
    first = run("bootstrap")
    assert "DEVELOPMENT master keyring" in first
    assert "Production must set KMS_MASTER_KEYS" in first
    assert "first sign-in asks you to enrol an authenticator app (TOTP)" in first
    assert stat.S_IMODE(dev_keyring.stat().st_mode) == 0o600
    password = re.search(r"Password \(shown once, not stored in clear\): (\S+)", first).group(1)
    admin = User.objects.get(username="admin")
    assert user_roles(admin) == [Role.ADMINISTRATOR]
    assert not admin.is_superuser  # permissions come from the role, never a bypass
    assert Client().login(username="admin", password=password)
    assert MasterKeyRecord.objects.filter(key_id="dev1").exists()

    keyring_bytes = dev_keyring.read_bytes()
    second = run("bootstrap")
    assert "already exists (admin); no user was created" in second
    assert "Password" not in second
    assert dev_keyring.read_bytes() == keyring_bytes  # the keyring is never replaced
    assert User.objects.count() == 1


def test_bootstrap_generates_a_different_password_each_fresh_install(dev_keyring: Path) -> None:
    first = re.search(r"clear\): (\S+)", run("bootstrap")).group(1)
    User.objects.all().delete()
    second = re.search(r"clear\): (\S+)", run("bootstrap")).group(1)
    assert first != second
    assert len(first) >= 20


def test_bootstrap_in_production_requires_master_keys(settings) -> None:
    settings.DEBUG = False
    settings.KMS_MASTER_KEYS = ""
    keyring_reset()
    with pytest.raises(CommandError, match="KMS_MASTER_KEYS is not set"):
        run("bootstrap")
    keyring_reset()
    assert not User.objects.exists()


def test_bootstrap_with_environment_keyring_records_check_value(settings) -> None:
    out = run("bootstrap", "--username", "root")
    assert "from KMS_MASTER_KEYS" in out
    assert MasterKeyRecord.objects.filter(key_id="test1").exists()
    assert User.objects.get(username="root").is_active


def test_createuser_prints_an_invitation_link_never_a_password(db) -> None:
    out = run(
        "createuser", "lena", "--role", "key-custodian", "--role", "auditor", "--email", "l@x.org"
    )
    assert "assword (" not in out
    link = re.search(r"hash is stored\): (\S+)", out).group(1)
    assert link.startswith("http://testserver/accounts/invitation/")
    lena = User.objects.get(username="lena")
    assert lena.email == "l@x.org"
    assert user_roles(lena) == [Role.KEY_CUSTODIAN, Role.AUDITOR]
    assert not lena.has_usable_password()
    path = link.removeprefix("http://testserver")
    page = Client().get(path)
    assert page.status_code == 200 and b"Choose your password" in page.content
    chosen = "lena's own passphrase 93"
    done = Client().post(path, {"new_password1": chosen, "new_password2": chosen})
    assert done.status_code == 302
    assert Client().login(username="lena", password=chosen)
    # Once only.
    assert Client().get(path).status_code == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mike", "--role", "superuser"], "unknown role 'superuser'"),
        (["bad name!", "--role", "auditor"], "Enter a valid username"),
        (["--role", "auditor"], "the following arguments are required: username"),
    ],
)
def test_createuser_bad_input(db, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        run("createuser", *args)
    assert not User.objects.exists()


def test_createuser_duplicate_name(make_user) -> None:
    make_user("nina", Role.AUDITOR)
    with pytest.raises(CommandError, match="already exists"):
        run("createuser", "NINA", "--role", "auditor")
    assert User.objects.count() == 1
