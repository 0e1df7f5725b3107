"""Bad input through the pages and the commands: a clear message, status 400 or a one-line
CommandError, and nothing created (no CA, no certificate, no audit event, no file)."""

from __future__ import annotations

import html
import subprocess
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from pki import services

from .conftest import csr_der, csr_pem, pki_state

pytestmark = pytest.mark.django_db

TOO_BIG = 70_000


@pytest.fixture(scope="session")
def bad_csrs(rsa_key, ec_key, weak_rsa_key, tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    """Each kind of unacceptable CSR and the words its refusal must contain."""
    good_der = csr_der(csr_pem(rsa_key))
    bad_signature = bytearray(good_der)
    bad_signature[-1] ^= 0x01  # the last byte belongs to the signature BIT STRING
    directory = tmp_path_factory.mktemp("sha1")
    (directory / "key.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # cryptography refuses to sign with SHA-1; openssl still does.
    subprocess.run(
        [
            *("openssl", "req", "-new", "-key", directory / "key.pem", "-sha1"),
            *("-subj", "/CN=legacy", "-out", directory / "sha1.pem"),
        ],
        check=True,
        capture_output=True,
    )
    name = x509.Name.from_rfc4514_string("CN=not a request")
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(ec_key, hashes.SHA256())
    )
    return {
        "garbage-pem": (
            b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n"
            b"-----END CERTIFICATE REQUEST-----\n",
            "the PEM block is damaged: its content is not a valid certificate signing request",
        ),
        "garbage": (b"hello, this is not a CSR", "the data is not a certificate signing request"),
        "truncated-der": (
            good_der[: len(good_der) // 2],
            "the CSR cannot be read: the DER data is truncated",
        ),
        "bad-signature": (bytes(bad_signature), "the CSR's signature does not verify"),
        "rsa-1024": (
            csr_pem(weak_rsa_key),
            "the CSR uses a 1024-bit RSA key; at least 2048 bits are required",
        ),
        "sha1": (
            (directory / "sha1.pem").read_bytes(),
            "the CSR is signed with SHA-1, which is no longer accepted",
        ),
        "certificate": (
            certificate.public_bytes(serialization.Encoding.PEM),
            "this is a certificate, not a certificate signing request",
        ),
        "oversized": (
            csr_pem(ec_key) + b"#" * (TOO_BIG - len(csr_pem(ec_key))),
            f"is {TOO_BIG:,} bytes; at most 65,536 bytes (64 KiB) are accepted",
        ),
    }


CASES = [
    "garbage-pem",
    "garbage",
    "truncated-der",
    "bad-signature",
    "rsa-1024",
    "sha1",
    "certificate",
    "oversized",
]


def page_text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("how", ["upload", "paste"])
def test_bad_csr_through_the_page(operator: Client, issuing, bad_csrs, case: str, how: str) -> None:
    data, message = bad_csrs[case]
    if how == "paste":
        try:
            pasted = data.decode("utf-8")
        except UnicodeDecodeError:
            pytest.skip("binary DER cannot be pasted")
        fields = {"csr_text": pasted}
    else:
        fields = {"csr_file": SimpleUploadedFile("request.csr", data)}
    before = pki_state()
    response = operator.post(
        "/pki/issue/", {"step": "request", "ca": "issuing", "profile": "tls-server", **fields}
    )
    assert response.status_code == 400
    text = page_text(response)
    assert message in text or message[0].upper() + message[1:] in text  # a sentence starts up
    assert pki_state() == before


@pytest.mark.parametrize("case", CASES)
def test_bad_csr_through_the_command(issuing, bad_csrs, tmp_path: Path, case: str) -> None:
    data, message = bad_csrs[case]
    (tmp_path / "request.csr").write_bytes(data)
    before = pki_state()
    with pytest.raises(CommandError) as caught:
        call_command(
            "cert_issue",
            "--ca",
            "issuing",
            "--profile",
            "tls-server",
            "--csr",
            str(tmp_path / "request.csr"),
            "--out",
            str(tmp_path / "leaf.pem"),
            stdout=StringIO(),
        )
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert pki_state() == before
    assert not (tmp_path / "leaf.pem").exists()


def test_a_tampered_csr_on_the_confirmation_page_is_refused(
    operator: Client, issuing, bad_csrs
) -> None:
    # The CSR travels in a hidden field between the steps; it is checked again each time.
    tampered = bad_csrs["rsa-1024"][0].decode()
    before = pki_state()
    for step in ("review", "issue"):
        response = operator.post(
            "/pki/issue/",
            {
                "step": step,
                "csr_pem": tampered,
                "ca": "issuing",
                "profile": "tls-server",
                "subject": "CN=x",
                "sans": "dns:x.example.org",
            },
        )
        assert response.status_code == 400
        assert "1024-bit RSA key" in page_text(response)
    assert pki_state() == before


def test_pasting_and_uploading_at_once_is_refused(operator: Client, issuing, ec_key) -> None:
    response = operator.post(
        "/pki/issue/",
        {
            "step": "request",
            "ca": "issuing",
            "profile": "tls-server",
            "csr_text": csr_pem(ec_key).decode(),
            "csr_file": SimpleUploadedFile("r.csr", csr_pem(ec_key)),
        },
    )
    assert response.status_code == 400
    assert "Paste the CSR or upload a file, not both." in page_text(response)


def test_an_intermediate_outliving_its_parent_through_page_and_command(
    administrator: Client, db
) -> None:
    services.certificate_authority_create(
        actor=None, name="short", subject="CN=Short", key_type="ecp256", days=100
    )
    before = pki_state()
    response = administrator.post(
        "/pki/cas/new/",
        {
            "name": "child",
            "subject": "CN=Child",
            "parent": "short",
            "key_type": "ecp256",
            "days": "200",
        },
    )
    assert response.status_code == 400
    assert "after its parent CA" in page_text(response)
    with pytest.raises(CommandError, match="after its parent CA"):
        call_command(
            "ca_create",
            "child",
            "--subject",
            "CN=Child",
            "--parent",
            "short",
            "--days",
            "200",
            "--key-type",
            "ecp256",
        )
    assert pki_state() == before


def test_non_ascii_subjects_work_through_page_and_command(
    operator: Client, issuing, ec_key, tmp_path: Path
) -> None:
    review = operator.post(
        "/pki/issue/",
        {
            "step": "request",
            "ca": "issuing",
            "profile": "tls-client",
            "csr_text": csr_pem(ec_key, "CN=Łukasz Żółć,O=Księgarnia", ()).decode(),
        },
    )
    assert review.status_code == 200
    assert "CN=Łukasz Żółć,O=Księgarnia" in page_text(review)
    (tmp_path / "r.csr").write_bytes(csr_pem(ec_key, "CN=Ærøskøbing Færge", ()))
    out = StringIO()
    call_command(
        "cert_issue",
        "--ca",
        "issuing",
        "--profile",
        "tls-client",
        "--csr",
        str(tmp_path / "r.csr"),
        "--out",
        str(tmp_path / "c.pem"),
        stdout=out,
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=Ærøskøbing Færge"
    call_command(
        "ca_create",
        "zh-root",
        "--subject",
        "CN=中文根证书,O=示例",
        "--key-type",
        "ecp256",
        stdout=out,
    )
    assert "CN=中文根证书,O=示例" in out.getvalue()


def test_page_limits_match_the_x509_layer() -> None:
    from kmsportal.crypto import x509 as layer
    from pki.models import CHAIN_UPLOAD_MAX_BYTES, UPLOAD_MAX_BYTES

    assert UPLOAD_MAX_BYTES == layer.CSR_MAX_BYTES == layer.CERTIFICATE_MAX_BYTES
    assert CHAIN_UPLOAD_MAX_BYTES == layer.BUNDLE_MAX_BYTES
