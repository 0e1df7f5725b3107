"""Reads of certificate authorities, and who sees which; the public reads other apps use
(`ca_by_name`, `ca_server_identity`)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.profiles import PROFILES, SUB_CA_PROFILE_NAME
from kmsportal.crypto.x509 import CertificateSummary, describe_certificate

from ..distribution import ca_distribution_points
from ..models import (
    CAState,
    Certificate,
    CertificateAuthority,
)

PAGE_SIZE = 50

VIEW_CA = "pki.view_certificateauthority"
VIEW_CERTIFICATE = "pki.view_certificate"
VIEW_CA_REVOCATION_REQUEST = "pki.view_carevocationrequest"
#: Asking for, approving and rejecting a CA revocation (the revoke page's permission).
REVOKE = "pki.revoke_certificate"


def _cas() -> QuerySet[CertificateAuthority]:
    return CertificateAuthority.objects.defer("sealed_private_key")


def profile_choices() -> list[tuple[str, str]]:
    """Leaf profiles as (name, "name: description"), for the issuance forms."""
    # kms-server is the KMS's own profile: no page issues it (pki.services refuses it).
    return [
        (p.name, f"{p.name}: {p.description}") for p in PROFILES.values() if p.name != "kms-server"
    ]


def profile_filter_choices() -> list[tuple[str, str]]:
    """Every profile a stored certificate can have (leaf profiles and sub-ca)."""
    return [(name, name) for name in [*PROFILES, SUB_CA_PROFILE_NAME]]


def _describe(der: bytes | memoryview) -> CertificateSummary:
    return describe_certificate(x509.load_der_x509_certificate(bytes(der)))


def _certificate_columns(queryset: QuerySet[Certificate]) -> QuerySet[Certificate]:
    return queryset.select_related("ca").only(
        "id",
        "serial_hex",
        "subject",
        "sans",
        "profile",
        "public_key",
        "not_before",
        "not_after",
        "status",
        "revocation_reason",
        "source",
        "issued_at",
        "issued_by_name",
        "ca__name",
    )


# --- certificate authorities -----------------------------------------------------------------


def ca_list(*, user: User) -> list[CertificateAuthority]:
    """Every CA, roots first then by name; empty for users who may not see CAs."""
    if not user.has_perm(VIEW_CA):
        return []
    return list(_cas().select_related("parent").order_by("parent_id", "name"))


def ca_get(*, user: User, name: str) -> CertificateAuthority | None:
    if not user.has_perm(VIEW_CA):
        return None
    return _cas().select_related("parent").filter(name=name).first()


def internal_ca_names() -> set[str]:
    """The key distribution's own CAs: their certificates come from enrollment and
    `bootstrap`, never from the portal's issuance forms (nor do CAs go under them)."""
    names = {
        settings.KMS_IDENTITY_CA_NAME,
        getattr(settings, "KMS_SERVER_IDENTITY_CA_NAME", ""),
    }
    return {name for name in names if name}


def _signing_cas(user: User) -> QuerySet[CertificateAuthority]:
    """Active, unexpired CAs other than the internal ones, by name."""
    if not user.has_perm(VIEW_CA):
        return _cas().none()
    return (
        _cas()
        .filter(state=CAState.ACTIVE, not_after__gt=timezone.now(), server_identity=False)
        .exclude(name__in=internal_ca_names())
        .order_by("name")
    )


def ca_issuing_choices(*, user: User) -> list[tuple[str, str]]:
    """CAs the issuance forms offer, as (name, label): active intermediates. Roots sign
    intermediates only (their key is the one everything trusts); the internal CAs are
    not offered (see `internal_ca_names`)."""
    return [
        (ca.name, f"{ca.name} ({ca.subject})")
        for ca in _signing_cas(user).filter(parent__isnull=False).only("name", "subject")
    ]


def ca_parent_choices(*, user: User) -> list[tuple[str, str]]:
    """CAs that may sign a new intermediate: active, and their path length leaves room for
    one more CA below them (a CA with path length 0 issues end-entity certificates only)."""
    return [
        (ca.name, f"{ca.name} ({ca.subject})")
        for ca in _signing_cas(user)
        .filter(Q(path_length__isnull=True) | Q(path_length__gt=0))
        .only("name", "subject")
    ]


def ca_public_get(*, name: str) -> CertificateAuthority | None:
    """A CA for the public certificate download (AIA caIssuers): no sign-in needed, since a
    CA certificate is public by design. Only the certificate columns (and what the caching
    headers need) are read."""
    return (
        CertificateAuthority.objects.only(
            "name",
            "certificate_der",
            "certificate_pem",
            "fingerprint_sha256",
            "created_at",
            "not_after",
        )
        .filter(name=name)
        .first()
    )


def ca_chain(*, ca: CertificateAuthority) -> list[CertificateAuthority]:
    """``ca`` and its ancestors, up to the root."""
    chain = [ca]
    while chain[-1].parent_id is not None and len(chain) < 16:
        chain.append(_cas().get(pk=chain[-1].parent_id))
    return chain


def ca_chain_pem(*, ca: CertificateAuthority) -> str:
    """The CA's certificate followed by its ancestors' (the trust bundle to install)."""
    return "".join(c.certificate_pem for c in ca_chain(ca=ca))


def ca_children(*, ca: CertificateAuthority) -> list[CertificateAuthority]:
    return list(_cas().filter(parent=ca).order_by("name"))


@dataclass(frozen=True)
class CADetail:
    ca: CertificateAuthority
    summary: CertificateSummary
    chain: list[CertificateAuthority]
    children: list[CertificateAuthority]
    recent: list[Certificate]
    issued_count: int
    crl_url: str
    ocsp_url: str
    ca_issuers_url: str
    timeline: list[AuditEvent]


def ca_detail(*, ca: CertificateAuthority) -> CADetail:
    """What the CA page shows: the decoded certificate, chain, children, recent issuance."""
    points = ca_distribution_points(ca.name)
    return CADetail(
        ca=ca,
        summary=_describe(ca.certificate_der),
        chain=ca_chain(ca=ca),
        children=ca_children(ca=ca),
        recent=list(_certificate_columns(Certificate.objects.filter(ca=ca)).order_by("-id")[:10]),
        issued_count=Certificate.objects.filter(ca=ca).count(),
        crl_url=points.crl,
        ocsp_url=points.ocsp,
        ca_issuers_url=points.ca_issuers,
        timeline=list(
            AuditEvent.objects.filter(
                target_type="pki.CertificateAuthority", target_id=str(ca.pk)
            ).order_by("-sequence")[:50]
        ),
    )


# --- for other apps (vault): pki's public reads -------------------------------------------
#
# vault asks pki through these and `pki.services`, never through pki's models or tables.


def ca_by_name(*, name: str) -> CertificateAuthority | None:
    """The CA called ``name`` (the whole row: services may sign with it), or None."""
    return CertificateAuthority.objects.filter(name=name).first()


def ca_server_identity() -> CertificateAuthority | None:
    """The deployment's server-identity CA (at most one is marked, a database constraint)."""
    return CertificateAuthority.objects.filter(server_identity=True).first()
