"""Key material never leaves its sealed column: not in the audit log, not in any log line,
not in command output (and, once the pages exist, not in a page)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from kmsportal.keyring.services import unseal
from vault import services
from vault.models import KeyVersion, SymmetricKey

from .conftest import make_due, schedule_destruction

pytestmark = pytest.mark.django_db


def forms(material: bytes) -> list[bytes]:
    """The material as bytes, hex (both cases), base64 (standard, URL-safe, unpadded), repr."""
    b64 = base64.b64encode(material)
    urlsafe = base64.urlsafe_b64encode(material)
    return [
        material,
        material.hex().encode(),
        material.hex().upper().encode(),
        b64,
        b64.rstrip(b"="),
        urlsafe,
        urlsafe.rstrip(b"="),
        repr(material)[2:-1].encode(),
    ]


def materials() -> list[bytes]:
    """Every stored version's material, unsealed here in the test."""
    found = []
    for version in KeyVersion.objects.exclude(sealed_material=None):
        material = unseal(bytes(version.sealed_material), aad=version.aad)
        assert len(material) == 32
        found.append(material)
    return found


def as_bytes(value: object) -> bytes:
    """Every leaf of `value` (binary as is, the rest as text), separated by NUL bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return b"\x00".join(as_bytes(k) + b"\x00" + as_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return b"\x00".join(as_bytes(item) for item in value)
    if isinstance(value, str):
        return value.encode() + b"\x00" + json.dumps(value).encode()  # also JSON-escaped
    return str(value).encode()


def audit_rows() -> Iterator[bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditevent ORDER BY sequence")
        for row in cursor.fetchall():
            yield b"\x00".join(as_bytes(value) for value in row)


def assert_nowhere(secrets: list[bytes], haystacks: list[bytes]) -> None:
    for index, material in enumerate(secrets):
        for form in forms(material):
            for hay in haystacks:
                assert form not in hay, f"material of stored version #{index} leaked"


@pytest.fixture
def every_query_logged() -> Iterator[None]:
    """Log every SQL statement with its parameters (as DEBUG=True would)."""
    connection.force_debug_cursor = True
    yield
    connection.force_debug_cursor = False


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def test_material_appears_in_no_audit_row_log_line_or_command_output(
    caplog, every_query_logged, custodian, second_custodian
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    output = [
        run("key_create", "orders-db", "--rotation-days", "30", "--description", "orders"),
        run("key_rotate", "orders-db"),
        run("key_compromise", "orders-db", "--version", "2", "--reason", "seen in a dump"),
        run("key_create", "billing", "--activate-at", "2999-01-01T00:00Z"),
        run("key_list"),
    ]
    payroll = services.symmetric_key_create(actor=custodian, name="payroll")
    services.symmetric_key_rotate(actor=custodian, key=payroll, min_decryption_version=2)
    services.symmetric_key_compromise(actor=custodian, key=payroll, reason="laptop stolen")
    for key in SymmetricKey.objects.all():
        services.key_material_verify(actor=custodian, key=key)
    # A key about to be destroyed: take its material now, before it is erased.
    retired = services.symmetric_key_create(actor=custodian, name="retired")
    secrets = materials()
    schedule_destruction(retired, custodian, second_custodian)
    make_due(retired)
    output.append(run("destroy_due_keys"))
    SymmetricKey.objects.filter(name="orders-db").update(
        next_rotation_at=timezone.now() - timedelta(minutes=1)
    )
    output.append(run("rotate_due_keys"))
    secrets += materials()  # the version made by the scheduled rotation as well

    assert len({*secrets}) == 8  # orders 1-4, billing 1, payroll 1-2, retired 1
    assert any("INSERT INTO" in r.getMessage() for r in caplog.records)  # SQL was logged
    logged = [caplog.text.encode()] + [
        as_bytes(r.getMessage()) + as_bytes(r.args) + as_bytes(r.__dict__) for r in caplog.records
    ]
    rows = list(audit_rows())
    assert len(rows) >= 15
    assert_nowhere(secrets, rows + logged + [text.encode() for text in output])


def test_material_appears_in_no_page(key, custodian, signed_in) -> None:
    list_url = reverse("vault:key_list")
    detail_url = reverse("vault:key_detail", args=["orders-db"])
    k = key("orders-db")
    services.symmetric_key_rotate(actor=None, key=k)
    services.key_version_compromise(actor=None, key=k, number=1, reason="x")
    client = signed_in(custodian)  # password and second factor
    assert custodian.groups.filter(name=Role.KEY_CUSTODIAN).exists()
    pages = []
    for url in (list_url, detail_url):
        response = client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content)
    assert b"orders-db" in pages[1]
    assert_nowhere(materials(), pages)
