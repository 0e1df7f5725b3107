"""Bring your own key: the OpenSSL commands of the README (the same as docs/key-custody.md's),
run exactly as written, wrap material that `key_import` takes in with the fingerprint of the
material itself; the one-time wrapping key is gone afterwards; a blob for another token is
refused."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.key_import import wrap_for_import
from kmsportal.crypto.symmetric import key_check_value
from kmsportal.keyring.backends import key_backend
from kmsportal.keyring.services import unseal, unseal_material
from tests.key_backends import BOTH_BACKENDS
from vault.key_import import KeyImportError, key_import, key_import_parameters_create
from vault.models import KeyImportToken, KeyOrigin, KeyVersion, SymmetricKey

pytestmark = [pytest.mark.django_db, BOTH_BACKENDS]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOC = ROOT / "docs" / "key-custody.md"


def openssl_block(path: Path) -> str:
    """The shell block that follows the `byok-openssl` marker in ``path``, as written (the
    docs page indents it inside a list item; that indentation is not part of it)."""
    block = re.search(
        r"^( *)<!-- byok-openssl -->\n\1```sh\n(.*?)^\1```", path.read_text(), re.S | re.M
    )
    assert block, f"{path.name} lost its OpenSSL commands"
    indent = block.group(1)
    lines = block.group(2).splitlines(keepends=True)
    assert all(line.startswith(indent) for line in lines), f"{path.name}: a line left the block"
    return "".join(line.removeprefix(indent) for line in lines)


def documented_openssl_commands() -> str:
    """The README's OpenSSL commands, which the tests run exactly as written; the Key
    custody page shows the very same lines."""
    commands = openssl_block(README)
    assert openssl_block(DOC).encode() == commands.encode(), (
        "README.md and docs/key-custody.md show different OpenSSL commands"
    )
    return commands


def run_documented_openssl_commands(directory: Path) -> None:
    """Run the documented commands in ``directory`` (which holds ``import/``), as a user would."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_openssl_commands()],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def material_of(version: KeyVersion) -> bytes:
    return unseal_material(bytes(version.sealed_material), aad=version.aad)


def test_the_documented_openssl_commands_wrap_what_key_import_takes(
    tmp_path: Path, key_backend_name: str
) -> None:
    call_command("key_create", "orders-db", stdout=StringIO())
    out = run("key_import_params", "orders-db", "--out", str(tmp_path / "import"))
    assert "RSA-3072 wrapping key" in out
    token_file = tmp_path / "import" / "import-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token not in out
    record = KeyImportToken.objects.get()
    assert record.token_sha256 != token and token not in str(record.__dict__)
    import_payload = unseal(bytes(record.sealed_private_key), aad=record.aad)

    run_documented_openssl_commands(tmp_path)
    material = (tmp_path / "key-material.bin").read_bytes()
    assert len(material) == 32
    assert not (tmp_path / "aes-key.bin").exists()

    out = run(
        "key_import",
        "orders-db",
        "--wrapped",
        str(tmp_path / "wrapped-key.bin"),
        "--token-file",
        str(token_file),
    )
    version = KeyVersion.objects.get(key__name="orders-db", number=2)
    assert out.strip() == (
        f"Imported key orders-db, version 2 (origin external), fingerprint {key_check_value(material)}"
    )
    assert version.origin == KeyOrigin.EXTERNAL and version.is_primary
    assert material_of(version) == material
    assert KeyVersion.objects.get(key__name="orders-db", number=1).state == "deactivated"
    event = AuditEvent.objects.filter(action="key.imported").get()
    assert event.details["origin"] == "external" and event.details["version"] == 2
    assert event.details["fingerprint"] == version.fingerprint
    assert material.hex() not in str(AuditEvent.objects.values_list("details", flat=True))

    # The one-time wrapping key is destroyed; the token is spent.
    record.refresh_from_db()
    assert record.sealed_private_key is None and record.used_at is not None
    if key_backend_name == "pkcs11":
        assert import_payload[3:19] not in key_backend().token.object_ids(label="kmsportal-wrap")
    with pytest.raises(CommandError, match="this import token was used"):
        run(
            "key_import",
            "orders-db",
            "--wrapped",
            str(tmp_path / "wrapped-key.bin"),
            "--token-file",
            str(token_file),
        )


def test_a_new_name_becomes_a_new_key_with_an_external_first_version() -> None:
    parameters = key_import_parameters_create(actor=None, key_name="partner-key", key_size=4096)
    public = serialization.load_pem_public_key(parameters.public_key_pem.encode())
    assert public.key_size == 4096
    material = bytes(range(32))
    version = key_import(
        actor=None,
        key_name="partner-key",
        wrapped=wrap_for_import(public, material),
        import_token=parameters.token,
    )
    key = SymmetricKey.objects.get(name="partner-key")
    assert (version.number, version.origin, key.state) == (1, "external", "active")
    assert version.fingerprint == key_check_value(material)
    assert material_of(version) == material


def test_a_blob_for_another_import_token_is_refused_and_changes_nothing(key) -> None:
    key("orders-db")
    first = key_import_parameters_create(actor=None, key_name="orders-db")
    second = key_import_parameters_create(actor=None, key_name="orders-db")
    public = serialization.load_pem_public_key(first.public_key_pem.encode())
    blob = wrap_for_import(public, b"k" * 32)
    versions = KeyVersion.objects.count()

    with pytest.raises(KeyImportError, match="wrapped for another import token"):
        key_import(actor=None, key_name="orders-db", wrapped=blob, import_token=second.token)

    assert KeyVersion.objects.count() == versions
    refusal = AuditEvent.objects.filter(action="key.import_refused").get()
    assert refusal.outcome == "denied" and refusal.details["import_id"] == str(second.record.pk)
    # The right token still works (a refusal does not spend it).
    version = key_import(actor=None, key_name="orders-db", wrapped=blob, import_token=first.token)
    assert version.number == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("expired", "this import token expired"),
        ("other-key", "this import token is for key orders-db, not billing"),
        ("unknown", "unknown import token"),
        ("short-material", "the imported material is 16 bytes"),
        ("damaged", "the AES key wrap part fails its integrity check"),
        ("truncated", "expected the 384-byte RSA-OAEP block"),
    ],
)
def test_refusals_name_the_problem(key, change: str, message: str) -> None:
    key("orders-db")
    key("billing")
    parameters = key_import_parameters_create(actor=None, key_name="orders-db")
    public = serialization.load_pem_public_key(parameters.public_key_pem.encode())
    blob = wrap_for_import(public, b"s" * (16 if change == "short-material" else 32))
    name, token = "orders-db", parameters.token
    if change == "expired":
        KeyImportToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif change == "other-key":
        name = "billing"
    elif change == "unknown":
        token = "not-a-token"
    elif change == "damaged":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    elif change == "truncated":
        blob = blob[:100]
    with pytest.raises(KeyImportError, match=re.escape(message)):
        key_import(actor=None, key_name=name, wrapped=blob, import_token=token)
    assert not KeyVersion.objects.filter(origin="external").exists()


def test_the_import_key_is_held_by_the_backend(key_backend_name: str) -> None:
    parameters = key_import_parameters_create(actor=None, key_name="orders-db")
    record = parameters.record
    payload = unseal(bytes(record.sealed_private_key), aad=record.aad)
    if key_backend_name == "pkcs11":
        # Sealed under a wrapping key of its own in the token, destroyed after use.
        assert payload[:3] == b"KW1"
        assert payload[3:19] in key_backend().token.object_ids(label="kmsportal-wrap")
    else:
        assert payload[:1] == b"\x30"  # PKCS#8 DER, sealed under the master key


def test_an_unusable_key_name_is_refused(key) -> None:
    with pytest.raises(KeyImportError, match="is not a valid key name"):
        key_import_parameters_create(actor=None, key_name="Bad Name")
    k = key("orders-db")
    from vault import services

    services.symmetric_key_suspend(actor=None, key=k)
    with pytest.raises(KeyImportError, match="only an active key takes an imported version"):
        key_import_parameters_create(actor=None, key_name="orders-db")
    with pytest.raises(KeyImportError, match="RSA 3072 or 4096"):
        key_import_parameters_create(actor=None, key_name="new-one", key_size=2048)


def test_the_portal_pages_import_a_key(make_user, signed_in) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from accounts.roles import Role

    custodian = signed_in(make_user("kim-custodian", Role.KEY_CUSTODIAN))
    assert "Import key" in custodian.get("/keys/").content.decode()
    page = custodian.post("/keys/import/", {"name": "partner-key", "key_size": "3072"})
    assert page.status_code == 200
    html = page.content.decode()
    pem = re.search(r'<pre id="wrapping-public-key">(.*?)</pre>', html, re.S).group(1)
    token = re.search(r'<code id="import-token">(.*?)</code>', html).group(1)
    assert page["Cache-Control"].startswith("max-age=0")
    material = b"\x42" * 32
    blob = wrap_for_import(serialization.load_pem_public_key(pem.encode()), material)

    wrong = custodian.post(
        "/keys/import/upload/",
        {
            "name": "partner-key",
            "import_token": "nope",
            "wrapped_key": SimpleUploadedFile("wrapped-key.bin", blob),
        },
    )
    assert wrong.status_code == 400 and "Unknown import token" in wrong.content.decode()
    done = custodian.post(
        "/keys/import/upload/",
        {
            "name": "partner-key",
            "import_token": token,
            "wrapped_key": SimpleUploadedFile("wrapped-key.bin", blob),
        },
    )
    assert done.status_code == 302 and done["Location"] == "/keys/partner-key/"
    detail = custodian.get("/keys/partner-key/").content.decode()
    assert key_check_value(material) in detail and "external" in detail
    assert token not in detail


def test_an_import_token_is_valid_for_exactly_24_hours(key) -> None:
    """Issued 24 hours + 1 s ago: refused, nothing imported; issued a moment less than
    24 hours ago: accepted. Time moves in the token's stored dates, as the clock would."""
    key("orders-db")

    def token_issued(ago: timedelta) -> tuple[str, bytes]:
        parameters = key_import_parameters_create(actor=None, key_name="orders-db")
        record = parameters.record
        assert record.expires_at - record.created_at == timedelta(hours=24)
        issued = timezone.now() - ago
        KeyImportToken.objects.filter(pk=record.pk).update(
            created_at=issued, expires_at=issued + (record.expires_at - record.created_at)
        )
        public = serialization.load_pem_public_key(parameters.public_key_pem.encode())
        return parameters.token, wrap_for_import(public, b"m" * 32)

    token, blob = token_issued(timedelta(hours=24, seconds=1))
    with pytest.raises(KeyImportError, match="this import token expired at"):
        key_import(actor=None, key_name="orders-db", wrapped=blob, import_token=token)
    assert not KeyVersion.objects.filter(origin=KeyOrigin.EXTERNAL).exists()

    # A few seconds' margin for the time the import itself takes on a busy machine.
    token, blob = token_issued(timedelta(hours=24) - timedelta(seconds=5))
    version = key_import(actor=None, key_name="orders-db", wrapped=blob, import_token=token)
    assert version.origin == KeyOrigin.EXTERNAL
    assert material_of(version) == b"m" * 32
