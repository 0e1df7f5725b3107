"""Shared by the PKI services: limits and defaults, input checks, and certificate rows
with unique serial numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from cryptography import x509
from django.db import IntegrityError, transaction
from django.utils import timezone

from kmsportal.actors import Actor, actor_name
from kmsportal.crypto.profiles import ProfileError
from kmsportal.crypto.x509 import (
    KeyType,
    X509Error,
    certificate_to_der,
    certificate_to_pem,
    describe_public_key,
    format_name,
    format_san,
    new_serial_number,
)

from ..errors import PkiError
from ..models import (
    Certificate,
    CertificateAuthority,
    CertificateSource,
    CertificateStatus,
    serial_to_hex,
)

DEFAULT_ROOT_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 1825
#: Key type of server-generated leaf key pairs: RSA-2048 opens everywhere PKCS#12 is read.
DEFAULT_LEAF_KEY_TYPE = KeyType.rsa2048
MAX_CA_DAYS = 36500
# Path segments of the CA pages that can never be CA names.
RESERVED_CA_NAMES = frozenset({"new"})
# A duplicate serial means 159 random bits collided; a few tries settle it for good.
_SERIAL_ATTEMPTS = 5
PURPOSES = ("server", "client", "any")


@contextmanager
def _x509_errors() -> Iterator[None]:
    """The X.509 layer's user-facing errors become PkiError with the same message."""
    try:
        yield
    except (X509Error, ProfileError) as exc:
        raise PkiError(str(exc)) from None


def _key_type(value: KeyType | str) -> KeyType:
    try:
        return KeyType(value)
    except ValueError:
        choices = ", ".join(k.value for k in KeyType)
        raise PkiError(f"unknown key type {value!r}; choose one of {choices}") from None


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


def _certificate_of(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_der_x509_certificate(bytes(ca.certificate_der))


# --- serial numbers and certificate rows ---------------------------------------------------


def _certificate_row(
    *,
    ca: CertificateAuthority,
    certificate: x509.Certificate,
    profile: str,
    source: CertificateSource,
    actor: Actor,
    sans: Sequence[x509.GeneralName],
) -> Certificate:
    der = certificate_to_der(certificate)
    return Certificate(
        ca=ca,
        serial_hex=serial_to_hex(certificate.serial_number),
        subject=format_name(certificate.subject),
        sans="\n".join(format_san(n) for n in sans),
        profile=profile,
        public_key=describe_public_key(certificate.public_key()),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=certificate_to_pem(certificate).decode("ascii"),
        certificate_der=der,
        fingerprint_sha256=_fingerprint(der),
        status=CertificateStatus.VALID,
        source=source,
        issued_by=actor,
        issued_by_name=actor_name(actor),
        issued_at=timezone.now(),
    )


def _sign_with_unique_serial(
    *,
    ca: CertificateAuthority,
    build: Callable[[int], x509.Certificate],
    row: Callable[[x509.Certificate], Certificate],
) -> tuple[x509.Certificate, Certificate]:
    """Sign with a fresh random serial and insert the row; on a duplicate serial for this CA,
    sign again with another one.

    Uniqueness is the database's job (constraint pki_certificate_serial), not a check before
    the insert, which two concurrent issuers could both pass. The insert runs in a savepoint,
    so a duplicate rolls back only itself. On PostgreSQL a concurrent insert of the same
    serial waits for the other transaction and fails only if that one commits.
    """
    for _ in range(_SERIAL_ATTEMPTS):
        certificate = build(new_serial_number())
        record = row(certificate)
        try:
            with transaction.atomic():
                record.save(force_insert=True)
        except IntegrityError:
            if Certificate.objects.filter(ca=ca, serial_hex=record.serial_hex).exists():
                continue
            raise
        return certificate, record
    raise PkiError(
        f"no unused serial number was found for CA {ca.name} in {_SERIAL_ATTEMPTS} attempts; "
        "the random number generator may be broken"
    )
