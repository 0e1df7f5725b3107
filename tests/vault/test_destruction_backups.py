"""What destroying a key reaches, per key backend, proved against a copy of the database
taken before the destruction (a backup).

pkcs11: each version was sealed by its own wrapping key in the token; destruction destroys
those token objects, so the copy's blobs no longer open with the token.
software: the copy still opens with the master key (said honestly on the key page); the
backup-retiring procedure (new master key, rewrap, remove the old key) makes it unreadable.
Either way the erased row versions are scrubbed from the live database files.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path

import pytest
from django.db import connection

from kmsportal.crypto.envelope import EnvelopeUnknownKeyError
from kmsportal.crypto.pkcs11_token import WRAP_KEY_LABEL
from kmsportal.crypto.symmetric import key_check_value
from kmsportal.keyring.backends import KeyMaterialDestroyed, key_backend
from kmsportal.keyring.services import (
    keyring_reset,
    sealed_blobs_rewrap,
    storage_scrub,
    unseal,
    unseal_material,
)
from tests.key_backends import BOTH_BACKENDS
from tests.vault.conftest import make_due, schedule_destruction
from vault import services
from vault.models import KeyVersion

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), BOTH_BACKENDS]


def database_copy(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """A copy of the database as a backup would take it, and the key versions read back
    from the copy: {aad: (sealed blob, fingerprint)}.

    SQLite: the online backup API writes a real copy of the whole database file. PostgreSQL:
    `COPY ... TO STDOUT` of the table, the way pg_dump reads it.
    """
    rows: list[tuple[int, int, bytes, str]] = []
    if connection.vendor == "sqlite":
        target = tmp_path / "backup.sqlite3"
        connection.ensure_connection()
        with sqlite3.connect(target) as copy:
            connection.connection.backup(copy)
        with sqlite3.connect(target) as copy:
            rows = copy.execute(
                "SELECT key_id, number, sealed_material, fingerprint FROM vault_keyversion"
            ).fetchall()
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT key_id, number, sealed_material, fingerprint FROM vault_keyversion"
            )
            rows = cursor.fetchall()
    copied = {}
    for key_id, number, blob, fingerprint in rows:
        copied[f"vault.KeyVersion:{_uuid(key_id)}:{number}"] = (bytes(blob), fingerprint)
    return copied


def _uuid(value: object) -> str:
    import uuid

    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def pages_holding(table: str, needles: list[bytes]) -> int:
    """PostgreSQL: how many of the table's pages still contain any of the needles."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", [table])
        (pages,) = cursor.fetchone()
        found = 0
        for page in range(pages):
            cursor.execute("SELECT get_raw_page(%s, %s)", [table, page])
            raw = bytes(cursor.fetchone()[0])
            found += any(needle in raw for needle in needles)
        return found


@pytest.fixture
def custodians(custodian, second_custodian):
    return custodian, second_custodian


def test_destruction_versus_a_backup_taken_before_it(
    key, custodians, key_backend_name: str, tmp_path: Path, settings, signed_in
) -> None:
    requester, approver = custodians
    k = key("orders-db")
    services.symmetric_key_rotate(actor=None, key=k)
    page = signed_in(requester).get(f"/keys/{k.name}/").content.decode()
    assert key_backend().destruction_guarantee.split(":")[0] in page

    backup = database_copy(tmp_path)
    assert len(backup) == 2
    for aad, (blob, fingerprint) in backup.items():  # the copy is a working backup
        assert key_check_value(unseal_material(blob, aad=aad.encode())) == fingerprint
    wrapping_keys = (
        key_backend().token.object_ids(label=WRAP_KEY_LABEL)
        if key_backend_name == "pkcs11"
        else set()
    )

    schedule_destruction(k, requester, approver)
    make_due(k)
    assert services.symmetric_keys_destroy_due() == ["orders-db"]
    assert list(KeyVersion.objects.filter(key=k).values_list("sealed_material", flat=True)) == [
        None,
        None,
    ]

    if key_backend_name == "pkcs11":
        # Every blob of the backup still opens its outer seal, but the wrapping key inside
        # the token is gone: the material cannot come back from any copy of the database.
        for aad, (blob, _) in backup.items():
            unseal(blob, aad=aad.encode())
            with pytest.raises(KeyMaterialDestroyed, match="the material was destroyed"):
                unseal_material(blob, aad=aad.encode())
        payload_ids = {unseal(b, aad=a.encode())[3:19] for a, (b, _) in backup.items()}
        assert payload_ids <= wrapping_keys
        assert not payload_ids & key_backend().token.object_ids(label=WRAP_KEY_LABEL)
    else:
        # Honest: the software backend cannot reach the backup...
        for aad, (blob, fingerprint) in backup.items():
            assert key_check_value(unseal_material(blob, aad=aad.encode())) == fingerprint
        # ...until the master key that sealed it is retired: new key first, rewrap, drop
        # the old one (docs/key-custody.md).
        old = settings.KMS_MASTER_KEYS
        new = "retire2:" + base64.b64encode(b"n" * 32).decode()
        settings.KMS_MASTER_KEYS = f"{new},{old}"
        keyring_reset()
        list(sealed_blobs_rewrap())
        settings.KMS_MASTER_KEYS = new
        keyring_reset()
        try:
            for aad, (blob, _) in backup.items():
                with pytest.raises(EnvelopeUnknownKeyError):
                    unseal_material(blob, aad=aad.encode())
        finally:
            settings.KMS_MASTER_KEYS = old
            keyring_reset()

    # Scrubbed from the live database files after the commit.
    if connection.vendor == "postgresql":
        # VACUUM keeps row versions that a transaction older than the erasure might still
        # see, in any database of the cluster (parallel runs on a shared server). Wait for
        # those to end and scrub again, as the next destruction would: then nothing is left.
        blobs = [b for b, _ in backup.values()]
        deadline = time.monotonic() + 120
        while pages_holding("vault_keyversion", blobs) and time.monotonic() < deadline:
            time.sleep(1)
            storage_scrub(model=KeyVersion)
        assert pages_holding("vault_keyversion", blobs) == 0
    else:
        # The test database is in memory, where freed cells are not left behind either way;
        # what the code controls is that every connection erases freed cells.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA secure_delete")
            assert cursor.fetchone()[0] == 1
