"""The two-person rule for revoking a CA: one person asks, a different one approves.

Revoking an intermediate CA's certificate revokes that CA, every CA below it and everything
they issued, for good. So no one does it alone: :func:`ca_revocation_request` records what
should be revoked and why (checked as the revocation itself would check it), and only
:func:`ca_revocation_approve`, by someone other than the requester and within
:data:`~pki.models.CA_REVOCATION_REQUEST_TTL`, revokes: it calls
:func:`pki.revocation.certificate_revoke` in its own transaction, so the cascade, the CRLs and
their audit events are exactly those of a direct revocation, followed by
``ca.revocation_approved``. A request can be rejected (by another person) or withdrawn (by the
requester); neither changes anything but the request.

Every service is one transaction that records its audit event last. Who may call them is the
caller's business (the portal asks for ``pki.revoke_certificate``); ``certificate_revoke``
itself keeps no such rule, because leaf certificates and the vault's client revocations are
revoked in one step.

Concurrency: the approval locks the request row first (then, inside ``certificate_revoke``,
the issuing CA, the certificate and the CAs below, as `pki.revocation` describes), so two
approvers racing take turns and the second finds the request approved. A new request locks
the pending requests of its certificate; the partial unique constraint (one pending request
per certificate) is the backstop when two people ask at the same moment.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.approvers import approver_check
from audit.services import audit_event_record
from kmsportal.crypto.crl import RevocationReason
from kmsportal.two_person import TwoPersonError, two_person_lapse

from .errors import PkiError
from .events import PkiAction
from .models import CA_REVOCATION_REQUEST_TTL, CARevocationRequest, Certificate
from .revocation import certificate_revocation_preview, certificate_revoke

__all__ = [
    "ca_revocation_approve",
    "ca_revocation_reject",
    "ca_revocation_request",
    "ca_revocation_withdraw",
]

Pending = CARevocationRequest.Status.PENDING


def _record(
    action: PkiAction,
    *,
    actor: User | None,
    request: CARevocationRequest,
    details: dict[str, object] | None = None,
) -> None:
    ca = request.ca
    audit_event_record(
        action=action,
        actor=actor,
        target=ca,
        target_label=ca.name,
        details={
            "request": request.pk,
            "ca": ca.name,
            "serial": request.certificate.serial_number_display,
            "issuer": request.certificate.ca.name,
            "reason": request.reason,
            **(details or {}),
        },
    )


def _lapse_expired(certificate: Certificate, now: datetime) -> None:
    """Pending requests past their time become ``expired`` (visibly, not deleted), each
    audited as ``ca.revocation_expired``, as the other two-person kinds do."""
    two_person_lapse(
        CARevocationRequest,
        certificate_id=certificate.pk,
        related=("ca", "certificate", "certificate__ca"),
        record=lambda lapsed: _record(
            PkiAction.CA_REVOCATION_EXPIRED,
            actor=None,
            request=lapsed,
            details={"requested_by": lapsed.requested_by_name},
        ),
    )


@transaction.atomic
def ca_revocation_request(
    *,
    actor: User,
    certificate: Certificate,
    reason: RevocationReason | str,
    invalidity_date: datetime | None = None,
    comment: str,
) -> CARevocationRequest:
    """Ask for the revocation of a CA's certificate (and so of the CA and all below it).

    Reason and invalidity date are checked as the revocation checks them (an RFC 5280
    reason, never certificateHold; an invalidity date only with a compromise, not in the
    future); a blank ``comment`` (why, for the approver), a certificate that is not an
    intermediate CA's, or is already revoked, or has a request waiting already, raises :class:`PkiError` and changes nothing. Audited as
    ``ca.revocation_requested``.
    """
    if not (comment or "").strip():
        raise PkiError(
            "say why this CA must be revoked: the approver reads it (a blank reason is refused)"
        )
    preview = certificate_revocation_preview(
        certificate=certificate, reason=reason, invalidity_date=invalidity_date
    )
    if preview.revoked_ca is None:
        raise PkiError(
            f"certificate {preview.certificate.serial_number_display} is not the certificate of "
            "a CA in this portal; revoke it directly, it needs no second approval"
        )
    now = timezone.now()
    list(
        CARevocationRequest.objects.select_for_update()
        .filter(certificate_id=certificate.pk, status=Pending)
        .values_list("pk", flat=True)
    )
    _lapse_expired(certificate, now)
    waiting = (
        CARevocationRequest.objects.filter(certificate_id=certificate.pk, status=Pending)
        .values_list("requested_by_name", flat=True)
        .first()
    )
    if waiting is not None:
        raise PkiError(
            f"a revocation of CA {preview.revoked_ca.name} asked by {waiting} is already waiting "
            "for approval; approve, reject or withdraw that one"
        )
    try:
        with transaction.atomic():
            request = CARevocationRequest.objects.create(
                certificate=preview.certificate,
                ca=preview.revoked_ca,
                reason=preview.reason.value,
                invalidity_date=preview.invalidity_date,
                comment=comment.strip()[:1000],
                requested_by=actor,
                requested_by_name=actor.get_username(),
                requested_at=now,
                expires_at=now + CA_REVOCATION_REQUEST_TTL,
            )
    except IntegrityError:
        # Someone asked at the same moment (the partial unique constraint).
        raise PkiError(
            f"a revocation of CA {preview.revoked_ca.name} is already waiting for approval"
        ) from None
    _record(
        PkiAction.CA_REVOCATION_REQUESTED,
        actor=actor,
        request=request,
        details={
            "invalidity_date": (
                request.invalidity_date.isoformat() if request.invalidity_date else None
            ),
            "comment": request.comment,
            "cas_below": preview.cas_below,
            "certificates_below": preview.certificates_below,
            "expires_at": request.expires_at.isoformat(),
        },
    )
    return request


def _pending(request: CARevocationRequest) -> CARevocationRequest:
    """The request, locked for this transaction and freshly read; it must be pending."""
    locked = (
        CARevocationRequest.objects.select_for_update(of=("self",))
        .select_related("ca", "certificate", "certificate__ca")
        .defer("ca__sealed_private_key", "certificate__ca__sealed_private_key")
        .get(pk=request.pk)
    )
    if locked.status != Pending:
        who = f" by {locked.decided_by_name}" if locked.decided_by_name else ""
        raise PkiError(
            f"this request is already {locked.get_status_display()}{who}; nothing was changed"
        )
    return locked


def _decide(
    request: CARevocationRequest,
    *,
    actor: User,
    status: CARevocationRequest.Status,
    comment: str = "",
) -> None:
    request.status = status
    request.decided_by = actor
    request.decided_by_name = actor.get_username()
    request.decided_at = timezone.now()
    request.decision_comment = comment.strip()[:1000]
    request.save(
        update_fields=["status", "decided_by", "decided_by_name", "decided_at", "decision_comment"]
    )


@transaction.atomic
def ca_revocation_approve(*, actor: User, request: CARevocationRequest) -> Certificate:
    """Second person: approve, which revokes the CA's certificate now, with the CA and
    everything below it (:func:`pki.revocation.certificate_revoke`, in this transaction).

    Refused, nothing changed: the requester (:class:`TwoPersonError`), an approver without
    their own second factor (:class:`ApproverNotEligible`), and (:class:`PkiError`) a request
    that is not pending or has expired, or whose certificate was revoked meanwhile. Audited as the
    revocation's own events followed by ``ca.revocation_approved``.
    """
    request = _pending(request)
    if request.requested_by_id == actor.pk:  # the same refusal as every two-person kind's
        raise TwoPersonError(
            "you asked for this revocation; a different person who may revoke certificates "
            "must approve it (two-person rule)"
        )
    # Own password, own authenticator, past the cooling-off (accounts.approvers); its
    # refusal (ApproverNotEligible, 403) goes out as it is, as for the vault's kinds.
    approver_check(user=actor, permission="pki.revoke_certificate")
    if request.is_expired:
        raise PkiError(
            f"this request expired at {request.expires_at:%Y-%m-%d %H:%M} UTC; ask for a new "
            "one (this one can only be rejected or withdrawn)"
        )
    current = Certificate.objects.only("status", "revoked_at").get(pk=request.certificate_id)
    if current.is_revoked:
        raise PkiError(
            f"the certificate of CA {request.ca.name} was revoked meanwhile (at "
            f"{current.revoked_at:%Y-%m-%d %H:%M} UTC); reject this request"
        )
    revoked = certificate_revoke(
        actor=actor,
        certificate=request.certificate,
        reason=request.reason,
        invalidity_date=request.invalidity_date,
    )
    _decide(request, actor=actor, status=CARevocationRequest.Status.APPROVED)
    _record(
        PkiAction.CA_REVOCATION_APPROVED,
        actor=actor,
        request=request,
        details={
            "requested_by": request.requested_by_name,
            "revoked_at": revoked.revoked_at.isoformat() if revoked.revoked_at else None,
        },
    )
    return revoked


@transaction.atomic
def ca_revocation_reject(
    *, actor: User, request: CARevocationRequest, comment: str = ""
) -> CARevocationRequest:
    """Another person turns the request down (also once it has expired); nothing is revoked.
    The requester withdraws instead (:func:`ca_revocation_withdraw`). Audited as
    ``ca.revocation_rejected``."""
    request = _pending(request)
    if request.requested_by_id == actor.pk:
        raise PkiError("you asked for this revocation: withdraw it instead of rejecting it")
    _decide(request, actor=actor, status=CARevocationRequest.Status.REJECTED, comment=comment)
    _record(
        PkiAction.CA_REVOCATION_REJECTED,
        actor=actor,
        request=request,
        details={"requested_by": request.requested_by_name, "comment": request.decision_comment},
    )
    return request


@transaction.atomic
def ca_revocation_withdraw(*, actor: User, request: CARevocationRequest) -> CARevocationRequest:
    """The requester takes the request back (also once it has expired); nothing is revoked.
    Audited as ``ca.revocation_withdrawn``."""
    request = _pending(request)
    if request.requested_by_id != actor.pk:
        raise PkiError(
            f"only {request.requested_by_name}, who asked for it, can withdraw this request; "
            "reject it instead"
        )
    _decide(request, actor=actor, status=CARevocationRequest.Status.WITHDRAWN)
    _record(PkiAction.CA_REVOCATION_WITHDRAWN, actor=actor, request=request)
    return request
