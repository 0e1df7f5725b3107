"""When `KMS_PUBLIC_URL` changes: find the CA certificates that name the old address and
re-issue them under the new one.

Every certificate a CA signs carries its CRL distribution point and AIA (caIssuers, OCSP)
under `KMS_PUBLIC_URL` (pki.distribution). A deployment that moved (another host, another
port) keeps serving, but relying parties and clients that follow the old addresses fail.
Intermediate CAs are re-issued here with the same key, subject and validity period and the
new addresses, so everything they already signed still chains to them (same key, same
subject key identifier). Roots carry no addresses: the root that clients pinned never changes.
End-entity certificates keep the addresses they were issued with until they are renewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from django.contrib.auth.models import User
from django.db import transaction

from audit.services import audit_event_record
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    describe_certificate,
)

from .distribution import ca_distribution_points
from .errors import PkiError
from .events import PkiAction
from .models import CAState, CertificateAuthority
from .services.cas import _ca_certificate_set, _sign_sub_ca
from .services.records import _x509_errors
from .signers import ca_signer


@dataclass(frozen=True)
class StaleAddresses:
    """A certificate whose CRL/AIA addresses are not the ones the portal now serves."""

    what: str
    found: tuple[str, ...]
    expected: tuple[str, ...]


def certificate_addresses(certificate_der: bytes) -> tuple[str, ...]:
    """The CRL distribution point, caIssuers and OCSP addresses a certificate carries."""
    summary = describe_certificate(x509.load_der_x509_certificate(certificate_der))
    return (*summary.crl_distribution_points, *summary.ca_issuers_urls, *summary.ocsp_urls)


def addresses_stale(
    *, certificate_der: bytes, issuer_name: str, what: str
) -> StaleAddresses | None:
    """None if every address in the certificate is one the issuer's services now answer at."""
    points = ca_distribution_points(issuer_name)
    expected = (points.crl, points.ca_issuers, points.ocsp)
    found = certificate_addresses(certificate_der)
    if all(url in expected for url in found):
        return None
    return StaleAddresses(what=what, found=found, expected=expected)


def certificate_authorities_with_stale_addresses() -> list[
    tuple[CertificateAuthority, StaleAddresses]
]:
    """Active intermediate CAs whose own certificate names an old public URL, parents first."""
    stale = []
    cas = (
        CertificateAuthority.objects.filter(parent__isnull=False, state=CAState.ACTIVE)
        .select_related("parent")
        .defer("sealed_private_key")
    )
    for ca in sorted(cas, key=_depth):
        assert ca.parent is not None  # the query asked for intermediates only
        problem = addresses_stale(
            certificate_der=bytes(ca.certificate_der),
            issuer_name=ca.parent.name,
            what=f"CA {ca.name}",
        )
        if problem is not None:
            stale.append((ca, problem))
    return stale


def _depth(ca: CertificateAuthority) -> int:
    depth = 0
    parent = ca.parent
    while parent is not None:
        depth += 1
        parent = parent.parent
    return depth


@transaction.atomic
def certificate_authority_reissue(
    *, actor: User | None, ca: CertificateAuthority
) -> CertificateAuthority:
    """Re-issue intermediate ``ca``'s certificate with the current public addresses.

    Same key, subject, path length and validity period; a new serial signed by the parent.
    The previous certificate stays valid (chains that carry it keep working); the CA row
    serves the new one from now on (`/pki/ca/<name>.crt`, chains handed to clients).
    """
    # Parent first, then the CA (the order issuance under a parent uses): a disable or a
    # revocation committed meanwhile is seen, and waits for this.
    parent_id = CertificateAuthority.objects.filter(pk=ca.pk).values_list("parent_id", flat=True)
    parent = CertificateAuthority.objects.select_for_update().filter(pk__in=parent_id).first()
    ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    if parent is None:
        raise PkiError(f"{ca.name} is a root CA: its certificate names no addresses")
    if ca.state != CAState.ACTIVE or parent.state != CAState.ACTIVE:
        raise PkiError(f"only an active CA under an active parent can be re-issued ({ca.name})")
    old_certificate = x509.load_der_x509_certificate(bytes(ca.certificate_der))
    parent_certificate = x509.load_der_x509_certificate(bytes(parent.certificate_der))
    points = ca_distribution_points(parent.name)
    parent_signer = ca_signer(parent)
    start = old_certificate.not_valid_before_utc
    # Whole days, rounded up: a default validity that ended with the parent is not whole
    # days, and ``end_with_parent`` brings it back to exactly the parent's end.
    days = -(-(old_certificate.not_valid_after_utc - start) // timedelta(days=1))

    def build(serial: int) -> x509.Certificate:
        with _x509_errors():
            return build_ca_certificate(
                subject=old_certificate.subject,
                public_key=old_certificate.public_key(),  # type: ignore[arg-type]
                signer=parent_signer,
                issuer_certificate=parent_certificate,
                days=days,
                path_length=ca.path_length,
                crl_distribution_url=points.crl,
                ca_issuers_url=points.ca_issuers,
                ocsp_url=points.ocsp,
                serial_number=serial,
                not_before=start,
                end_with_parent=True,
            )

    certificate = _sign_sub_ca(parent=parent, actor=actor, build=build)
    previous_serial = ca.serial_number_display
    _ca_certificate_set(ca, certificate)
    ca.save(
        update_fields=[
            "certificate_der",
            "certificate_pem",
            "serial_hex",
            "fingerprint_sha256",
            "not_before",
            "not_after",
        ]
    )
    audit_event_record(
        action=PkiAction.CA_REISSUED,
        actor=actor,
        target=ca,
        target_label=ca.name,
        details={
            "name": ca.name,
            "previous_serial": previous_serial,
            "serial": ca.serial_number_display,
            "crl_url": points.crl,
            "ca_issuers_url": points.ca_issuers,
            "ocsp_url": points.ocsp,
            "fingerprint": ca.fingerprint_sha256,
        },
    )
    return ca
