"""CA revocation requests (two-person rule, see pki.approvals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from kmsportal.crypto.profiles import SUB_CA_PROFILE_NAME
from kmsportal.two_person import ApprovalSummary, pending_summary

from ..errors import PkiError
from ..models import (
    CARevocationRequest,
    Certificate,
    CertificateAuthority,
)
from ..revocation import certificate_revocation_preview
from .cas import (
    REVOKE,
    VIEW_CA_REVOCATION_REQUEST,
    _cas,
)


def ca_of_certificate(*, certificate: Certificate) -> CertificateAuthority | None:
    """The intermediate CA in this portal whose certificate ``certificate`` is; None for any
    other certificate (its revocation needs no second approval)."""
    if certificate.profile != SUB_CA_PROFILE_NAME:
        return None
    return _cas().filter(parent_id=certificate.ca_id, serial_hex=certificate.serial_hex).first()


def ca_own_certificate(*, ca: CertificateAuthority) -> Certificate | None:
    """An intermediate CA's own certificate, as its parent issued it; None for a root."""
    if ca.parent_id is None:
        return None
    return (
        Certificate.objects.filter(ca_id=ca.parent_id, serial_hex=ca.serial_hex)
        .only("id", "ca_id", "serial_hex", "status", "profile")
        .first()
    )


def _ca_revocation_requests() -> QuerySet[CARevocationRequest]:
    return CARevocationRequest.objects.select_related("ca", "certificate", "certificate__ca").defer(
        "ca__sealed_private_key", "certificate__ca__sealed_private_key"
    )


@dataclass(frozen=True)
class PendingCARevocation:
    """A request as the approvals inbox shows it, with what approving it would revoke."""

    request: CARevocationRequest
    cas_below: list[str]
    certificates_below: int
    #: Why it can no longer be approved as it stands (e.g. revoked meanwhile), or "".
    problem: str


def ca_revocation_requests_pending(*, user: User) -> list[PendingCARevocation]:
    """Pending requests, oldest first, each with its impact as of now (the CAs and the
    certificates below); empty for users who may not see the inbox."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return []
    rows: list[PendingCARevocation] = []
    for request in (
        _ca_revocation_requests()
        .filter(status=CARevocationRequest.Status.PENDING)
        .order_by("requested_at", "id")
    ):
        try:
            preview = certificate_revocation_preview(
                certificate=request.certificate,
                reason=request.reason,
                invalidity_date=request.invalidity_date,
            )
        except PkiError as exc:
            rows.append(PendingCARevocation(request, [], 0, str(exc)))
        else:
            rows.append(
                PendingCARevocation(request, preview.cas_below, preview.certificates_below, "")
            )
    return rows


def ca_revocation_request_get(*, user: User, pk: int) -> CARevocationRequest | None:
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return None
    return _ca_revocation_requests().filter(pk=pk).first()


def ca_revocation_requests_of(*, user: User, certificate: Certificate) -> list[CARevocationRequest]:
    """The latest requests to revoke this CA certificate (for its and its CA's page)."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return []
    return list(_ca_revocation_requests().filter(certificate_id=certificate.pk)[:5])


def ca_revocation_summary(*, user: User, now: datetime | None = None) -> ApprovalSummary | None:
    """Pending CA revocation requests for users who may see the inbox; one aggregate query."""
    if not user.has_perm(VIEW_CA_REVOCATION_REQUEST):
        return None
    return pending_summary(
        CARevocationRequest,
        user=user,
        can_approve=user.has_perm(REVOKE),
        now=now or timezone.now(),
    )
