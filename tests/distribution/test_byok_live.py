"""Bring your own key end to end: material wrapped by the documented OpenSSL commands,
imported with `key_import`, fetched by an enrolled client over the live API: the client
gets back exactly the bytes that were wrapped. On both key backends."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.distribution.conftest import LiveKMS
from tests.key_backends import BOTH_BACKENDS
from tests.vault.test_key_import import run_documented_openssl_commands
from vault.models import GrantVersions, SymmetricKey

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), BOTH_BACKENDS]


def test_an_imported_key_is_fetched_byte_for_byte(kms: LiveKMS, tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    owner.mkdir()
    call_command(
        "key_import_params", "partner-key", "--out", str(owner / "import"), stdout=StringIO()
    )
    run_documented_openssl_commands(owner)
    out = StringIO()
    call_command(
        "key_import",
        "partner-key",
        "--wrapped",
        str(owner / "wrapped-key.bin"),
        "--token-file",
        str(owner / "import" / "import-token"),
        stdout=out,
    )
    assert "version 1 (origin external)" in out.getvalue()

    key = SymmetricKey.objects.get(name="partner-key")
    client = kms.enrolled("billing")
    kms.grant("billing", key, GrantVersions.ALL)
    assert client.fetch_key("partner-key") == (owner / "key-material.bin").read_bytes()
