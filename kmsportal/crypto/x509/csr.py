"""Certificate signing requests: loading and checking what a requester sent, building our own."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import (
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from kmsportal.crypto.signer import PrivateKey, signature_hash_for
from kmsportal.crypto.x509.errors import CSRError
from kmsportal.crypto.x509.keys import public_key_problem
from kmsportal.crypto.x509.loading import (
    der_structure_problem,
    looks_like_pem,
    pem_blocks,
    pem_label_problem,
)

#: Largest CSR accepted (PEM or DER). Real CSRs are 1-4 KiB.
CSR_MAX_BYTES = 65536

# --- CSRs ------------------------------------------------------------------------------------

# Signatures made with broken hashes are refused by name. SHA-1 collisions are practical
# (SHAttered, 2017); MD5 ones since 2004.
_WEAK_SIGNATURE_ALGORITHMS: dict[ObjectIdentifier, str] = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA-1",
    ObjectIdentifier("1.3.14.3.2.29"): "SHA-1",  # sha1WithRSASignature (OIW)
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "SHA-1",
}


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load and check a certificate signing request in PEM or DER form.

    Accepted: at most :data:`CSR_MAX_BYTES`; an RSA key of 2048-8192 bits or an EC key on
    P-256, P-384 or P-521; not signed with SHA-1 or MD5; a signature that verifies (proof
    that the requester holds the private key). Raises :class:`CSRError` otherwise, with a
    message that names the problem.
    """
    if len(data) > CSR_MAX_BYTES:
        raise CSRError(
            f"the CSR is {len(data):,} bytes; at most {CSR_MAX_BYTES:,} bytes (64 KiB) are accepted"
        )
    if not data.strip():
        raise CSRError("the CSR is empty")
    if looks_like_pem(data):
        csr = _load_pem_csr(data)
    elif data[0] == 0x30:  # an ASN.1 SEQUENCE: try DER
        problem = der_structure_problem(data)
        if problem:
            raise CSRError(f"the CSR cannot be read: {problem}")
        try:
            csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise CSRError("the data is DER but not a valid certificate signing request") from None
    else:
        raise CSRError(
            "the data is not a certificate signing request: expected PEM "
            "(-----BEGIN CERTIFICATE REQUEST-----) or DER"
        )
    _check_csr(csr)
    return csr


def _load_pem_csr(data: bytes) -> x509.CertificateSigningRequest:
    blocks, unterminated = pem_blocks(data)
    for label, block in blocks:
        if label in {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}:
            try:
                return x509.load_pem_x509_csr(block)
            except ValueError:
                raise CSRError(
                    "the PEM block is damaged: its content is not a valid certificate "
                    "signing request (was it cut off or edited?)"
                ) from None
    if blocks:
        raise CSRError(pem_label_problem(blocks[0][0], "certificate signing request"))
    if unterminated:
        raise CSRError(f"the PEM data is incomplete: no matching -----END {unterminated}----- line")
    raise CSRError("the PEM data has no valid -----BEGIN CERTIFICATE REQUEST----- line")


def _check_csr(csr: x509.CertificateSigningRequest) -> None:
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CSRError("the CSR's public key uses an unsupported algorithm") from None
    problem = public_key_problem(public_key)
    if problem:
        raise CSRError(f"the CSR uses {problem}")
    weak = _WEAK_SIGNATURE_ALGORITHMS.get(csr.signature_algorithm_oid)
    if weak:
        raise CSRError(
            f"the CSR is signed with {weak}, which is no longer accepted; "
            "create it again with SHA-256 or stronger"
        )
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CSRError(
            "the CSR's signature does not verify: the request was altered or not signed "
            "with the matching private key"
        )
    try:
        csr.extensions  # noqa: B018 - parse now so that a bad extension is reported here
    except ValueError as exc:
        raise CSRError(f"the CSR's requested extensions cannot be read: {exc}") from None


def csr_requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The subject alternative names requested in the CSR (empty list if none)."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise CSRError(f"the CSR's requested extensions cannot be read: {exc}") from None
    return list(extension.value)


def build_csr(
    *, private_key: PrivateKey, subject: x509.Name, sans: Sequence[x509.GeneralName] = ()
) -> bytes:
    """A PEM certificate signing request for `private_key`, signed with SHA-256 (SHA-384 for
    P-384). Used where this system makes its own key pairs (a client enrolling, the KMS's
    own server certificate): the private key never has to travel."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    csr = builder.sign(private_key, signature_hash_for(private_key))
    return csr.public_bytes(serialization.Encoding.PEM)
