"""kmsportal.crypto.pkcs11_token and token_signer against a SoftHSM2 token, no database:
AES-GCM in the token, destruction, and certificates, CRLs and OCSP responses signed in the
token that verify with the public key."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from kmsportal.crypto.envelope import EnvelopeIntegrityError, Keyring
from kmsportal.crypto.pkcs11_token import (
    WRAP_KEY_LABEL,
    Pkcs11KeyProvider,
    Pkcs11Token,
    TokenKeyMissing,
)
from kmsportal.crypto.token_signer import TokenSigner
from tests.key_backends import SoftHSM


@pytest.fixture
def token(softhsm: SoftHSM) -> Pkcs11Token:
    return Pkcs11Token(module=softhsm.module, token_label=softhsm.token_label, pin=softhsm.pin)


def test_aes_gcm_runs_in_the_token_and_refuses_tampering(token: Pkcs11Token) -> None:
    object_id = token.aes_key_create(label=WRAP_KEY_LABEL)
    nonce = os.urandom(12)
    sealed = token.aes_gcm_encrypt(
        label=WRAP_KEY_LABEL, object_id=object_id, nonce=nonce, plaintext=b"k" * 32, aad=b"row:1"
    )
    assert len(sealed) == 48
    opened = token.aes_gcm_decrypt(
        label=WRAP_KEY_LABEL, object_id=object_id, nonce=nonce, ciphertext=sealed, aad=b"row:1"
    )
    assert opened == b"k" * 32
    for ciphertext, aad in [(sealed, b"row:2"), (sealed[:-1] + bytes([sealed[-1] ^ 1]), b"row:1")]:
        with pytest.raises(InvalidTag):
            token.aes_gcm_decrypt(
                label=WRAP_KEY_LABEL,
                object_id=object_id,
                nonce=nonce,
                ciphertext=ciphertext,
                aad=aad,
            )
    # Destroyed: the next use finds nothing (the cached handle is forgotten), twice is no error.
    assert token.destroy(label=WRAP_KEY_LABEL, object_id=object_id)
    with pytest.raises(TokenKeyMissing):
        token.aes_gcm_decrypt(
            label=WRAP_KEY_LABEL, object_id=object_id, nonce=nonce, ciphertext=sealed, aad=b"row:1"
        )
    assert token.destroy(label=WRAP_KEY_LABEL, object_id=object_id) is False


def test_the_token_keyring_seals_and_tells_its_keys_apart(token: Pkcs11Token) -> None:
    for key_id in ("tk1", "tk2"):
        if not token.has_object(label=Pkcs11KeyProvider.label(key_id)):
            token.aes_key_create(label=Pkcs11KeyProvider.label(key_id))
    keyring = Keyring(Pkcs11KeyProvider(token, ("tk1",)))
    blob = keyring.seal(b"secret", b"aad")
    assert keyring.unseal(blob, b"aad") == b"secret"
    with pytest.raises(EnvelopeIntegrityError):
        keyring.unseal(blob, b"other aad")
    values = Keyring(Pkcs11KeyProvider(token, ("tk1", "tk2"))).key_check_values()
    assert len(set(values.values())) == 2 and all(len(v) == 16 for v in values.values())


def _builder(public_key: object, name: str = "Token CA") -> x509.CertificateBuilder:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


@pytest.mark.parametrize("key_type", ["rsa2048", "ecp256", "ecp384"])
def test_certificates_crls_and_ocsp_signed_in_the_token_verify(
    token: Pkcs11Token, key_type: str
) -> None:
    object_id = token.private_key_generate(key_type)
    public_key = token.public_key(object_id)
    signer = TokenSigner(public_key, lambda data, alg: token.sign(object_id, data, algorithm=alg))

    certificate = signer.sign_certificate(_builder(public_key))
    certificate.verify_directly_issued_by(certificate)
    assert certificate.public_key() == public_key

    now = dt.datetime.now(dt.UTC)
    crl = signer.sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(certificate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
    )
    assert crl.is_signature_valid(public_key)  # type: ignore[arg-type]

    response = signer.sign_ocsp_response(
        ocsp.OCSPResponseBuilder().add_response(
            cert=certificate,
            issuer=certificate,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now,
            revocation_time=None,
            revocation_reason=None,
        ),
        certificate,
    )
    expected_hash = x509.SubjectKeyIdentifier.from_public_key(public_key).digest  # type: ignore[arg-type]
    assert response.responder_key_hash == expected_hash
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(
            response.signature,
            response.tbs_response_bytes,
            padding.PKCS1v15(),
            response.signature_hash_algorithm,  # type: ignore[arg-type]
        )
    else:
        public_key.verify(  # type: ignore[union-attr]
            response.signature,
            response.tbs_response_bytes,
            ec.ECDSA(response.signature_hash_algorithm),  # type: ignore[arg-type]
        )


def test_an_imported_key_signs_like_the_original(token: Pkcs11Token) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    object_id = token.private_key_import(key)
    assert token.public_key(object_id) == key.public_key()
    signer = TokenSigner(
        key.public_key(), lambda data, alg: token.sign(object_id, data, algorithm=alg)
    )
    certificate = signer.sign_certificate(_builder(key.public_key(), "Imported"))
    certificate.verify_directly_issued_by(certificate)
    assert certificate.signature_hash_algorithm.name == "sha384"
    assert b"PRIVATE" not in certificate.public_bytes(serialization.Encoding.PEM)
