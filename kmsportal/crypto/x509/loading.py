"""Certificates from PEM and DER: size and structure checks, loading, encoding."""

from __future__ import annotations

import re
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kmsportal.crypto.x509.errors import CertificateLoadError

#: Largest single certificate accepted by :func:`load_certificate`.
CERTIFICATE_MAX_BYTES = 65536
#: Largest PEM bundle accepted by :func:`load_certificates`.
BUNDLE_MAX_BYTES = 1024 * 1024

# --- PEM / DER helpers -----------------------------------------------------------------------

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


def pem_blocks(data: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    """The PEM blocks of ``data`` as (label, whole block) in order, and the label of a block
    whose END line is missing (scanning stops there).

    A linear scan: a single regular expression over BEGIN...END with a back-reference would
    backtrack quadratically on input full of unterminated BEGIN lines.
    """
    blocks: list[tuple[str, bytes]] = []
    position = 0
    while True:
        begin = _PEM_BEGIN.search(data, position)
        if begin is None:
            return blocks, None
        label = begin.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, begin.end())
        if end == -1:
            return blocks, label.decode("ascii")
        position = end + len(end_marker)
        blocks.append((label.decode("ascii"), data[begin.start() : position]))


def der_structure_problem(data: bytes) -> str | None:
    """Check the outer DER TLV of ``data``: None if the length fits, else what is wrong."""
    if len(data) < 2:
        return f"the DER data is truncated: only {len(data)} byte(s) are present"
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        # DER forbids the indefinite form (0x80) and lengths need at most 4 octets here.
        if count == 0 or count > 4:
            return "the data is not valid DER (bad length encoding)"
        if len(data) < 2 + count:
            return f"the DER data is truncated: only {len(data)} byte(s) are present"
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    total = header + length
    if len(data) < total:
        return (
            f"the DER data is truncated: its header announces {total} bytes but only "
            f"{len(data)} are present"
        )
    if len(data) > total:
        return f"the DER data has {len(data) - total} unexpected byte(s) after its end"
    return None


def pem_label_problem(label: str, expected: str) -> str:
    if "PRIVATE KEY" in label:
        return f"this is a private key, not a {expected}; never upload private keys"
    if label in {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}:
        return f"this is a certificate signing request (CSR), not a {expected}"
    if label in {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}:
        return f"this is a certificate, not a {expected}"
    return f"the PEM block is a {label.title()}, not a {expected}"


def looks_like_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


# --- loading and encoding certificates -------------------------------------------------------


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one certificate from PEM (the first certificate block) or DER.

    Raises :class:`CertificateLoadError` for empty or oversized input, garbage, truncated DER,
    another kind of PEM block (key, CSR) or a certificate with unreadable extensions.
    """
    if len(data) > CERTIFICATE_MAX_BYTES:
        raise CertificateLoadError(
            f"the certificate is {len(data):,} bytes; at most {CERTIFICATE_MAX_BYTES:,} "
            "bytes are accepted"
        )
    if not data.strip():
        raise CertificateLoadError("the certificate is empty")
    if looks_like_pem(data):
        blocks, unterminated = pem_blocks(data)
        certificate_blocks = [b for label, b in blocks if label == "CERTIFICATE"]
        if not certificate_blocks:
            if blocks:
                raise CertificateLoadError(pem_label_problem(blocks[0][0], "certificate"))
            if unterminated:
                raise CertificateLoadError(
                    f"the PEM data is incomplete: no matching -----END {unterminated}----- line"
                )
            raise CertificateLoadError("the PEM data has no valid -----BEGIN CERTIFICATE----- line")
        return _load_pem_block(certificate_blocks[0])
    if data[0] != 0x30:
        raise CertificateLoadError(
            "the data is not a certificate: expected PEM (-----BEGIN CERTIFICATE-----) or DER"
        )
    problem = der_structure_problem(data)
    if problem:
        raise CertificateLoadError(f"the certificate cannot be read: {problem}")
    try:
        certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateLoadError("the data is DER but not a valid X.509 certificate") from None
    return _check_loaded(certificate)


def _load_pem_block(block: bytes) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(block)
    except ValueError:
        raise CertificateLoadError(
            "the PEM block is damaged: its content is not a valid X.509 certificate "
            "(was it cut off or edited?)"
        ) from None
    return _check_loaded(certificate)


def _check_loaded(certificate: x509.Certificate) -> x509.Certificate:
    try:
        certificate.extensions  # noqa: B018 - parse now to report bad extensions here
    except ValueError as exc:
        raise CertificateLoadError(f"the certificate's extensions cannot be read: {exc}") from None
    return certificate


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle (or the one certificate of a DER file).

    Blocks other than certificates are refused, since a bundle with, say, a private key in it
    was almost certainly uploaded by mistake. Errors name the position of the bad block.
    """
    if len(data) > BUNDLE_MAX_BYTES:
        raise CertificateLoadError(
            f"the bundle is {len(data):,} bytes; at most {BUNDLE_MAX_BYTES:,} bytes are accepted"
        )
    if not data.strip():
        raise CertificateLoadError("the certificate bundle is empty")
    if not looks_like_pem(data):
        return [load_certificate(data)]
    blocks, unterminated = pem_blocks(data)
    if unterminated:
        raise CertificateLoadError(
            f"block {len(blocks) + 1} of the bundle is incomplete: no matching "
            f"-----END {unterminated}----- line"
        )
    if not blocks:
        raise CertificateLoadError("the PEM data has no valid -----BEGIN CERTIFICATE----- line")
    certificates: list[x509.Certificate] = []
    for position, (label, block) in enumerate(blocks, start=1):
        if label != "CERTIFICATE":
            raise CertificateLoadError(
                f"block {position} of the bundle: {pem_label_problem(label, 'certificate')}"
            )
        try:
            certificates.append(_load_pem_block(block))
        except CertificateLoadError as exc:
            raise CertificateLoadError(f"certificate {position} of the bundle: {exc}") from None
    return certificates


def certificate_to_pem(certificate: x509.Certificate) -> bytes:
    """PEM encoding of ``certificate``."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def certificate_to_der(certificate: x509.Certificate) -> bytes:
    """DER encoding of ``certificate``."""
    return certificate.public_bytes(serialization.Encoding.DER)


_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


def get_extension(cert: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
