"""`python -m kmsclient enroll` and `fetch` as real processes against a live server: what an
operator does on two service machines that must share one key."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.models import AuditEvent
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    certificate_to_pem,
    generate_private_key,
    parse_subject,
)
from kmsportal.keyring.services import unseal
from tests.distribution.conftest import PROJECT_ROOT, LiveKMS, subprocess_env
from vault import clients
from vault.models import Client, Delivery, KeyVersion, RefusalTally, SymmetricKey

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def primary_material(key: SymmetricKey) -> bytes:
    version = KeyVersion.objects.get(key=key, is_primary=True)
    return unseal(bytes(version.sealed_material), aad=version.aad)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def enroll_cli(kms: LiveKMS, name: str) -> Path:
    """Register `name` (the operator's part) and enroll it with the CLI (the service's)."""
    _client, token = kms.new_client(name)
    directory = kms.tmp_path / name
    result = kms.cli(
        "enroll",
        "--url",
        kms.url,
        f"--token={token}",
        "--ca-cert",
        kms.root_file,
        "--out",
        directory,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"enrolled as {name}: identity stored in {directory}")
    assert token not in result.stdout + result.stderr
    return directory


def fetch_cli(kms: LiveKMS, *args: str | Path, env: dict[str, str] | None = None):
    return kms.cli("fetch", *args, env=env)


def test_two_services_share_one_key(kms: LiveKMS) -> None:
    key = kms.key("shared-db")
    billing = enroll_cli(kms, "billing")
    reporting = enroll_cli(kms, "reporting")
    for directory in (billing, reporting):
        assert mode(directory) == 0o700
        assert mode(directory / "client.key") == 0o600
        assert sorted(p.name for p in directory.iterdir()) == [
            "ca.pem",
            "chain.pem",
            "client.crt",
            "client.key",
            "kmsclient.json",
        ]
        assert (directory / "ca.pem").read_text() == kms.root_pem
    kms.grant("billing", key)
    kms.grant("reporting", key)

    keys = {}
    for name, directory in (("billing", billing), ("reporting", reporting)):
        out = kms.tmp_path / f"{name}.key"
        result = fetch_cli(kms, "shared-db", "--dir", directory, "--out", out)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"fetched shared-db version 1 (32 bytes) into {out}\n"
        assert mode(out) == 0o600
        keys[name] = out.read_bytes()
        for form in (keys[name].hex(), base64.b64encode(keys[name]).decode()):
            assert form not in result.stdout + result.stderr

    assert keys["billing"] == keys["reporting"] == primary_material(key)
    nonce = os.urandom(12)
    sealed = AESGCM(keys["billing"]).encrypt(nonce, b"invoice 2026-0042: 1234.56 EUR", b"inv")
    assert AESGCM(keys["reporting"]).decrypt(nonce, sealed, b"inv") == (
        b"invoice 2026-0042: 1234.56 EUR"
    )
    assert sorted(Delivery.objects.values_list("client__name", flat=True)) == [
        "billing",
        "reporting",
    ]


def test_the_identity_is_found_through_the_environment_or_the_current_directory(
    kms: LiveKMS,
) -> None:
    key = kms.key()
    directory = enroll_cli(kms, "billing")
    kms.grant("billing", key)

    result = fetch_cli(
        kms, "orders-db", "--stdout", "--group", "ffdhe3072", env={"KMSCLIENT_DIR": str(directory)}
    )
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip(), validate=True) == primary_material(key)

    result = subprocess.run(  # run from inside the identity directory
        [sys.executable, "-m", "kmsclient", "fetch", "orders-db", "--stdout"],
        cwd=directory,
        env={**subprocess_env(), "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip()) == primary_material(key)
    assert Delivery.objects.filter(group="ffdhe3072").count() == 1


def test_refusals_are_one_line_naming_the_reason_with_status_1(kms: LiveKMS) -> None:
    key = kms.key()
    directory = enroll_cli(kms, "billing")
    out = kms.tmp_path / "orders.key"

    result = fetch_cli(kms, "orders-db", "--dir", directory, "--out", out)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "error: refused by server: no_grant: client billing has no grant for key 'orders-db'"
    )
    assert not out.exists()

    kms.grant("billing", key)
    clients.client_suspend(actor=None, client=Client.objects.get(name="billing"))
    result = fetch_cli(kms, "orders-db", "--dir", directory, "--out", out)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: refused by server: client_suspended: client billing is suspended"
    )
    assert not out.exists()
    assert Delivery.objects.count() == 0


def test_usage_errors_are_status_2_and_fetch_nothing(kms: LiveKMS) -> None:
    key = kms.key()
    directory = enroll_cli(kms, "billing")
    kms.grant("billing", key)

    result = fetch_cli(kms, "orders-db", "--dir", directory)
    assert result.returncode == 2
    assert "say where the key goes: --out FILE" in result.stderr
    assert result.stdout == ""

    existing = kms.tmp_path / "existing.key"
    existing.write_bytes(b"keep me")
    result = fetch_cli(kms, "orders-db", "--dir", directory, "--out", existing)
    assert result.returncode == 2
    assert "already exists; use --force" in result.stderr
    assert existing.read_bytes() == b"keep me"

    result = fetch_cli(kms, "orders-db", "--dir", kms.tmp_path / "nobody", "--stdout")
    assert result.returncode == 2
    assert "no client identity in" in result.stderr
    assert Delivery.objects.count() == 0

    result = fetch_cli(kms, "orders-db", "--dir", directory, "--out", existing, "--force")
    assert result.returncode == 0, result.stderr
    assert existing.read_bytes() == primary_material(key)
    assert mode(existing) == 0o600


def test_enroll_refuses_a_root_that_is_not_the_pinned_one_and_a_spent_token(kms: LiveKMS) -> None:
    other_key = generate_private_key("ecp256")
    other_root = build_ca_certificate(
        subject=parse_subject("CN=kmsportal root CA,O=kmsportal"),  # same name, other key
        public_key=other_key.public_key(),
        signer=LoadedKeySigner(other_key),
        issuer_certificate=None,
        days=30,
        path_length=None,
    )
    wrong_root = kms.tmp_path / "wrong-root.pem"
    wrong_root.write_bytes(certificate_to_pem(other_root))
    _client, token = kms.new_client("billing")
    directory = kms.tmp_path / "billing"

    result = kms.cli(
        "enroll", "--url", kms.url, f"--token={token}", "--ca-cert", wrong_root, "--out", directory
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: the KMS's root CA 'CN=kmsportal root CA,O=kmsportal'")
    assert "is not the root you pinned with --ca-cert" in line
    assert not (directory / "client.key").exists()
    assert not (directory / "kmsclient.json").exists()

    # The token was spent by that attempt (the server cannot know the client refused).
    result = kms.cli(
        "enroll",
        "--url",
        kms.url,
        f"--token={token}",
        "--ca-cert",
        kms.root_file,
        "--out",
        directory,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: refused by server: invalid_token: ")
    # An unknown (here: spent) token names no pending enrollment, so no client: the refusal
    # is counted for its source address, not audited one by one.
    assert not AuditEvent.objects.filter(action="client.enrollment_refused").exists()
    assert RefusalTally.objects.get().codes == {"invalid_token": 1}

    token = clients.client_enrollment_token_renew(
        actor=None, client=Client.objects.get(name="billing")
    )
    enrolled = kms.cli(  # the token from standard input keeps it out of `ps`
        "enroll",
        "--url",
        kms.url,
        "--token",
        "-",
        "--ca-cert",
        kms.root_file,
        "--out",
        directory,
        "--key-type",
        "rsa2048",
        input=token + "\n",
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert b"BEGIN PRIVATE KEY" in (directory / "client.key").read_bytes()


def test_enroll_against_nothing_is_status_2(kms: LiveKMS) -> None:
    result = kms.cli(
        "enroll",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "a" * 64,
        "--ca-cert",
        kms.root_file,
        "--out",
        kms.tmp_path / "x",
    )
    assert result.returncode == 2
    assert "cannot reach the KMS at http://127.0.0.1:9/api/v1/enroll" in result.stderr
