"""Private keys: CA keys only sealed and bound to their row, re-sealable, loaded once per
process; generated leaf keys nowhere in the database, the audit log or the logs."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from io import StringIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import call_command
from django.db import connection

from kmsportal.checks import check_master_keyring
from kmsportal.crypto.envelope import EnvelopeIntegrityError
from kmsportal.keyring.backends import base as backends_base
from kmsportal.keyring.services import keyring_reset, sealed_blob_counts, sealed_fields, unseal
from pki import services, signers
from pki.models import Certificate, CertificateAuthority

from .conftest import csr_pem, pki_state

pytestmark = pytest.mark.django_db

KEY_1 = base64.b64encode(b"1" * 32).decode()
KEY_2 = base64.b64encode(b"2" * 32).decode()
OLD, BOTH, NEW = f"k1:{KEY_1}", f"k2:{KEY_2},k1:{KEY_1}", f"k2:{KEY_2}"
PASSWORD = "pkcs12 password that must not leak 9"


@pytest.fixture
def master_keys(settings) -> Iterator:
    def configure(spec: str) -> None:
        settings.KMS_MASTER_KEYS = spec
        keyring_reset()

    configure(OLD)
    yield configure
    keyring_reset()


@pytest.fixture
def loads(monkeypatch) -> list[int]:
    """Counts how often a CA private key is parsed (the ~175 ms step for RSA-3072)."""
    signers.ca_signer_cache_clear()
    calls: list[int] = []
    real = backends_base.private_key_from_der

    def counting(data: bytes):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(data)

    # The software key backend parses the stored PKCS#8 DER (pki.signers asks it to).
    monkeypatch.setattr(backends_base, "private_key_from_der", counting)
    return calls


def issue(ca: CertificateAuthority, key) -> Certificate:  # type: ignore[no-untyped-def]
    return services.certificate_issue_from_csr(
        actor=None, ca=ca, csr_pem_or_der=csr_pem(key), profile="tls-server"
    )


def every_stored_value() -> Iterator[tuple[str, object]]:
    """(table, value) for every column of every row of every table."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    yield table, value


def found_in_database(needles: list[bytes]) -> list[str]:
    """Tables holding any needle, in a value as stored or with line breaks removed (PEM)."""
    hits = []
    for table, value in every_stored_value():
        if isinstance(value, memoryview | bytes | bytearray):
            data = bytes(value)
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            continue
        joined = data.replace(b"\r", b"").replace(b"\n", b"")
        hits += [table for needle in needles if needle in data or needle in joined]
    return hits


def key_forms(key) -> list[bytes]:  # type: ignore[no-untyped-def]
    """What would betray a private key however it was stored: its DER encodings, and each
    private number (not the public parts, which the certificate rightly holds) as bytes, hex,
    and base64 at all three byte alignments (so a base64 or PEM body holding it matches)."""
    private = key.private_numbers()
    if isinstance(private, rsa.RSAPrivateNumbers):
        numbers = [private.d, private.p, private.q, private.dmp1, private.dmq1, private.iqmp]
    else:
        numbers = [private.private_value]
    forms = [
        key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        for fmt in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        )
    ]
    for number in numbers:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        forms += [raw, raw.hex().encode(), raw.hex().upper().encode()]
        forms += [base64.b64encode(bytes(shift) + raw)[4:-4] for shift in range(3)]
    return forms


# --- sealed CA keys --------------------------------------------------------------------------


def test_ca_key_is_sealed_and_bound_to_its_row(master_keys, issuing, root, ec_key, loads) -> None:
    assert bytes(issuing.sealed_private_key)[2:4] == b"k1"
    assert issuing.aad == f"pki.CertificateAuthority:{issuing.pk}:private-key".encode()
    der = unseal(issuing.sealed_private_key, aad=issuing.aad)
    with pytest.raises(EnvelopeIntegrityError):
        unseal(issuing.sealed_private_key, aad=root.aad)
    # The key is nowhere in clear.
    key = serialization.load_der_private_key(der, None)
    assert found_in_database(key_forms(key)) == []

    # A blob copied onto another CA does not open there: issuing fails and creates nothing.
    issue(issuing, ec_key)  # loads and caches the genuine key
    CertificateAuthority.objects.filter(pk=issuing.pk).update(
        sealed_private_key=bytes(root.sealed_private_key)
    )
    before = pki_state()
    with pytest.raises(services.PkiError, match="the private key of CA issuing cannot be unsealed"):
        issue(issuing, ec_key)  # the cached signer is not used: the stored blob changed
    assert pki_state() == before


def test_rewrap_covers_ca_keys(master_keys, issuing, ec_key, loads) -> None:
    assert any(f.model_label == "pki.CertificateAuthority" for f in sealed_fields())
    issue(issuing, ec_key)
    assert len(loads) == 1
    master_keys(NEW)
    found = [m.msg for m in check_master_keyring()]
    assert found and "master key 'k1' was removed" in found[0]

    master_keys(BOTH)
    out = StringIO()
    call_command("rewrap", stdout=out)
    assert "pki.CertificateAuthority.sealed_private_key: re-sealed 2 of 2" in out.getvalue()
    master_keys(NEW)
    assert check_master_keyring() == []
    assert set(sealed_blob_counts()) == {"k2"}
    issuing.refresh_from_db()
    assert bytes(issuing.sealed_private_key)[2:4] == b"k2"
    issue(issuing, ec_key)  # the re-sealed key opens under k2 alone
    assert len(loads) == 2  # the changed blob was loaded once more


# --- the signer cache ------------------------------------------------------------------------


def test_a_ca_key_is_loaded_once_per_process(issuing, ec_key, loads) -> None:
    for _ in range(5):
        issue(issuing, ec_key)
    assert len(loads) == 1
    services.certificate_generated_preview(
        ca=issuing, subject="CN=x", sans=["dns:x.example.org"], profile="tls-server"
    )
    assert len(loads) == 1  # previews never touch the CA key


def test_concurrent_first_uses_load_once(issuing, loads) -> None:
    fresh = CertificateAuthority.objects.get(pk=issuing.pk)
    barrier = threading.Barrier(8)
    results = []

    def use() -> None:
        barrier.wait()
        results.append(signers.ca_signer(fresh))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len({id(s) for s in results}) == 1


def test_a_new_ca_keeps_its_loaded_signer(
    root, loads, django_capture_on_commit_callbacks, ec_key
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ca = services.certificate_authority_create(
            actor=None, name="fresh", subject="CN=Fresh", parent=root, key_type="ecp256"
        )
    assert len(loads) == 1  # the parent's key, to sign the new CA's certificate
    issue(ca, ec_key)
    assert len(loads) == 1  # the new key signs from memory, never reloaded


def test_signer_never_exposes_key_material(issuing) -> None:
    signer = signers.ca_signer(CertificateAuthority.objects.get(pk=issuing.pk))
    assert repr(signer).startswith("<LoadedKeySigner ") and "PRIVATE" not in repr(signer)
    assert not any(isinstance(v, bytes) for v in vars(signer).values())


# --- generated leaf keys ---------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecp256", "rsa2048"])
def test_a_generated_key_is_nowhere_in_the_database(issuing, caplog, key_type: str) -> None:
    caplog.set_level(logging.DEBUG)
    credential = services.certificate_issue_generated(
        actor=None,
        ca=issuing,
        subject="CN=device-1",
        sans=["dns:device-1.example.org"],
        profile="tls-client",
        pkcs12_password=PASSWORD,
        key_type=key_type,
        pem_bundle=True,
    )
    key, certificate, _ = pkcs12.load_key_and_certificates(credential.pkcs12, PASSWORD.encode())
    assert certificate.public_bytes(serialization.Encoding.DER) == bytes(
        credential.certificate.certificate_der
    )
    needles = [
        *key_forms(key),
        credential.pkcs12[:64],
        credential.pem_bundle[:200],
        PASSWORD.encode(),
    ]
    assert found_in_database(needles) == []
    assert PASSWORD not in caplog.text
    # The search would have found the key had it been stored, in PEM as in DER.
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    row = Certificate.objects.filter(pk=credential.certificate.pk)
    row.update(sans=pem.decode())
    assert "pki_certificate" in found_in_database(key_forms(key))
    row.update(sans="", certificate_der=b"prefix" + key_forms(key)[0])
    assert "pki_certificate" in found_in_database(key_forms(key))
    assert all(form.decode("latin-1") not in caplog.text for form in key_forms(key)[3:])
