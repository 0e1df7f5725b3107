"""A `Signer` whose private key is somewhere else (a PKCS#11 token): it is given the bytes
to be signed and returns the signature.

cryptography's builders sign only with key objects it holds. So the certificate, CRL or OCSP
response is first built and signed by a *scratch* key of the same algorithm family (RSA
PKCS#1 v1.5 or ECDSA with the same hash): the to-be-signed part then carries exactly the
signatureAlgorithm identifier the real key needs (sha256WithRSAEncryption carries no key
size, ecdsa-with-SHA256/384 no curve). The to-be-signed bytes are signed by the token, and
the signature value of the scratch result is replaced (asn1crypto keeps the to-be-signed
bytes exactly as they were). The result is parsed again and its signature checked against
the real public key, so a mismatch can never be handed out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

# asn1crypto ships no type hints (no stubs exist either): its names are Any here.
from asn1crypto import crl as asn1_crl  # type: ignore[import-untyped]
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from asn1crypto.core import ParsableOctetString  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from kmsportal.crypto.signer import PublicKey, Signer, signature_hash_for

__all__ = ["SignBytes", "TokenSigner", "signature_algorithm_for"]

#: sign(data, algorithm) -> signature; algorithm is "rsa-sha256", "ecdsa-sha256" or
#: "ecdsa-sha384" (ECDSA signatures DER-encoded).
SignBytes = Callable[[bytes, str], bytes]


def signature_algorithm_for(public_key: PublicKey) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa-sha256"
    hash_algorithm = signature_hash_for(public_key)
    return "ecdsa-sha384" if isinstance(hash_algorithm, hashes.SHA384) else "ecdsa-sha256"


@cache
def _scratch_key(family: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    # Its signature is always thrown away; only the algorithm identifier it writes counts.
    # RSA-1024 because its signatures are the cheapest RSA ones.
    if family == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    return ec.generate_private_key(ec.SECP256R1())


class TokenSigner(Signer):
    """Signs through ``sign_bytes``; ``public_key`` is the public half of the remote key."""

    def __init__(self, public_key: PublicKey, sign_bytes: SignBytes, *, name: str = "") -> None:
        self._public_key = public_key
        self._sign_bytes = sign_bytes
        self._hash = signature_hash_for(public_key)
        self._algorithm = signature_algorithm_for(public_key)
        self._scratch = _scratch_key("rsa" if self._algorithm == "rsa-sha256" else "ec")
        self._name = name

    def __repr__(self) -> str:
        return f"<TokenSigner {self._name} {self._algorithm}>"

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    def _signature(self, tbs: bytes) -> bytes:
        signature = self._sign_bytes(tbs, self._algorithm)
        # Never hand out a signature that does not verify (wrong object, token fault).
        if isinstance(self._public_key, rsa.RSAPublicKey):
            self._public_key.verify(signature, tbs, padding.PKCS1v15(), self._hash)
        else:
            self._public_key.verify(signature, tbs, ec.ECDSA(self._hash))
        return signature

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        scratch = builder.sign(self._scratch, self._hash)
        signature = self._signature(scratch.tbs_certificate_bytes)
        parsed = asn1_x509.Certificate.load(scratch.public_bytes(serialization.Encoding.DER))
        parsed["signature_value"] = signature
        return x509.load_der_x509_certificate(parsed.dump())

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        scratch = builder.sign(self._scratch, self._hash)
        signature = self._signature(scratch.tbs_certlist_bytes)
        parsed = asn1_crl.CertificateList.load(scratch.public_bytes(serialization.Encoding.DER))
        parsed["signature"] = signature
        return x509.load_der_x509_crl(parsed.dump())

    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, responder_certificate: x509.Certificate
    ) -> ocsp.OCSPResponse:
        # cryptography insists that the signing key matches the responder certificate, so
        # the scratch response names a scratch certificate; its responderID (by key hash,
        # RFC 6960 4.2.1) is then replaced by the real responder's before the to-be-signed
        # part is signed.
        scratch = builder.responder_id(
            ocsp.OCSPResponderEncoding.HASH, _scratch_certificate(self._scratch)
        ).sign(self._scratch, self._hash)
        response = asn1_ocsp.OCSPResponse.load(scratch.public_bytes(serialization.Encoding.DER))
        basic = response["response_bytes"]["response"].parsed
        responder = asn1_x509.Certificate.load(
            responder_certificate.public_bytes(serialization.Encoding.DER)
        )
        basic["tbs_response_data"]["responder_id"] = asn1_ocsp.ResponderId(
            name="by_key", value=responder.public_key.sha1
        )
        basic["signature"] = self._signature(basic["tbs_response_data"].dump())
        rebuilt = asn1_ocsp.OCSPResponse(
            {
                "response_status": "successful",
                "response_bytes": {
                    "response_type": "basic_ocsp_response",
                    "response": ParsableOctetString(basic.dump()),
                },
            }
        )
        return ocsp.load_der_ocsp_response(rebuilt.dump())


@cache
def _scratch_certificate(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A throwaway self-signed certificate for the scratch key (never leaves this module)."""
    import datetime

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "scratch")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
