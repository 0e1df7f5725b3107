"""Revocation: RFC 5280 reasons, invalidity dates, certificate holds, and intermediate CAs.

Every service here is one transaction that, in this order, locks the issuing CA's row,
changes the certificate rows, publishes the CA's next CRL (see `pki.crl` for why inside the
transaction) and records its audit events last. So a revocation and the CRL that lists it
commit together or not at all, and concurrent revocations of one CA take turns at the CA
lock, each CRL listing every revocation committed before it.

Lock order: issuing CA, then the certificate, then (for an intermediate) the revoked CA and
the CAs below it, top down; then the audit chain head. Creating an intermediate locks only
its parent, issuance takes a shared lock on its CA (see `pki.services._issuing_ca`), so no
two of these can wait on each other in a cycle.

Reasons: every CRLReason an operator may give (RFC 5280 5.3.1), i.e. all but removeFromCRL
(delta CRLs only) and aACompromise (attribute certificates). An invalidity date (RFC 5280
5.3.2) goes with keyCompromise or cACompromise. certificateHold is the one revocation that
can be undone (:func:`certificate_release`) or made final by revoking again with another
reason; anything else revoked stays revoked, and revoking it again is an error.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_event_record
from kmsportal.actors import Actor
from kmsportal.crypto.crl import RevocationReason
from kmsportal.crypto.profiles import SUB_CA_PROFILE_NAME

from .crl import crl_delta_publish_locked, crl_publish_locked
from .errors import PkiError
from .events import PkiAction
from .models import (
    SERIAL_HEX_DIGITS,
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    CRLTrigger,
    RevocationList,
)

__all__ = [
    "INVALIDITY_DATE_REASONS",
    "REVOCATION_REASONS",
    "RevocationPreview",
    "certificate_by_serial",
    "certificate_release",
    "certificate_revocation_preview",
    "certificate_revoke",
]


#: The reasons an operator can choose, in RFC 5280 order.
REVOCATION_REASONS: tuple[RevocationReason, ...] = tuple(
    reason for reason in RevocationReason if reason.is_issuable
)
#: The reasons an invalidity date makes sense with: the key was (or may have been) exposed.
INVALIDITY_DATE_REASONS = frozenset(
    {RevocationReason.KEY_COMPROMISE, RevocationReason.CA_COMPROMISE}
)
_HOLD = RevocationReason.CERTIFICATE_HOLD


def _reason(value: object) -> RevocationReason:
    try:
        reason = RevocationReason(value)  # type: ignore[arg-type]
    except ValueError:
        choices = ", ".join(r.value for r in REVOCATION_REASONS)
        raise PkiError(f"unknown revocation reason {value!r}; choose one of {choices}") from None
    if not reason.is_issuable:
        raise PkiError(
            f"{reason.value} cannot be chosen when revoking a certificate: "
            + (
                "it only appears in delta CRLs, to say that a hold was released (release the "
                "hold instead)"
                if reason is RevocationReason.REMOVE_FROM_CRL
                else "it applies to attribute certificates, which this PKI does not issue"
            )
        )
    return reason


def _invalidity_date(
    value: datetime | None, reason: RevocationReason, now: datetime
) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise PkiError("the invalidity date must be a date and time")
    if reason not in INVALIDITY_DATE_REASONS:
        raise PkiError(
            "an invalidity date says since when a key is known or suspected to be compromised; "
            f"it goes with keyCompromise or cACompromise, not with {reason.value}"
        )
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    value = value.replace(microsecond=0)
    if value > now:
        raise PkiError(
            f"the invalidity date {value:%Y-%m-%d %H:%M:%S} UTC is in the future; give the "
            "time since which the key is known or suspected to be compromised"
        )
    if value.year < 1950:
        raise PkiError("the invalidity date must not be before 1950")
    return value


def _lock_ca(pk: uuid.UUID) -> CertificateAuthority:
    return CertificateAuthority.objects.select_for_update().get(pk=pk)


def _issued_ca(issuer: CertificateAuthority, record: Certificate) -> CertificateAuthority | None:
    """The intermediate CA whose certificate ``record`` is, locked; None for other certificates."""
    if record.profile != SUB_CA_PROFILE_NAME:
        return None
    return (
        CertificateAuthority.objects.select_for_update()
        .filter(parent_id=issuer.pk, serial_hex=record.serial_hex)
        .first()
    )


def _cascade_reason(reason: RevocationReason) -> RevocationReason:
    """What the certificates below a revoked CA are revoked for: a compromised CA key taints
    everything it signed (cACompromise); otherwise the CA has ceased to operate."""
    if reason in INVALIDITY_DATE_REASONS:
        return RevocationReason.CA_COMPROMISE
    return RevocationReason.CESSATION_OF_OPERATION


def _revoke_ca_tree(
    *, top: CertificateAuthority, reason: RevocationReason, now: datetime
) -> list[tuple[CertificateAuthority, int]]:
    """Mark ``top`` (locked) and every CA below it revoked, and revoke everything they
    issued that is not already revoked for good (holds become final). One UPDATE per CA,
    however many certificates it issued. Returns (CA, certificates revoked) top down."""
    done: list[tuple[CertificateAuthority, int]] = []
    pending = [top]
    while pending:
        current = pending.pop(0)
        current.state = CAState.REVOKED
        current.revoked_at = now
        current.revocation_reason = reason.value
        current.save(update_fields=["state", "revoked_at", "revocation_reason", "updated_at"])
        count = (
            Certificate.objects.filter(ca=current)
            .filter(
                Q(status=CertificateStatus.VALID)
                | Q(status=CertificateStatus.REVOKED, revocation_reason=_HOLD.value)
            )
            .update(
                status=CertificateStatus.REVOKED,
                revoked_at=now,
                revocation_reason=reason.value,
                invalidity_date=None,
            )
        )
        done.append((current, count))
        pending.extend(
            CertificateAuthority.objects.select_for_update()
            .filter(parent=current)
            .exclude(state=CAState.REVOKED)
            .order_by("name")
        )
    return done


def _already_revoked(record: Certificate) -> PkiError:
    reason = record.revocation_reason or RevocationReason.UNSPECIFIED.value
    when = f"{record.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if record.revoked_at else "earlier"
    return PkiError(
        f"certificate {record.serial_number_display} of CA {record.ca.name} is already revoked "
        f"(since {when}, reason {reason}); a revocation is final, so nothing was changed"
        + (
            ""
            if reason != _HOLD.value
            else " (it is on hold: release it, or revoke it with another reason to make it final)"
        )
    )


@transaction.atomic
def certificate_revoke(
    *,
    actor: Actor,
    certificate: Certificate,
    reason: RevocationReason | str,
    invalidity_date: datetime | None = None,
) -> Certificate:
    """Revoke ``certificate`` for ``reason`` (an RFC 5280 CRLReason name) and publish its CA's
    next CRL in the same transaction.

    ``invalidity_date`` (keyCompromise and cACompromise only, not in the future) is when the
    key is known or suspected to have been compromised. Expired certificates can be revoked.
    A certificate on hold can be revoked with another reason (the hold becomes final);
    anything else already revoked raises :class:`PkiError` and changes nothing.

    The certificate of an intermediate CA (profile ``sub-ca``, revoked on its parent): the
    intermediate and every CA below it become ``revoked`` (they issue nothing more) and
    everything they issued is revoked (cACompromise when the reason is a compromise,
    cessationOfOperation otherwise); each of those CAs and the parent publish a new CRL. A
    CA certificate cannot be put on hold.

    Audited as ``certificate.revoked`` (and ``ca.revoked`` per CA revoked with it). No
    permission check here: the portal and the callers (vault's client revocation) decide
    who may revoke.
    """
    chosen = _reason(reason)
    invalid_since = _invalidity_date(invalidity_date, chosen, timezone.now().replace(microsecond=0))

    ca = _lock_ca(certificate.ca_id)
    # The time is taken under the CA lock: a complete CRL published before this revocation
    # has a thisUpdate no later than it, so the delta CRL (revocations since its base's
    # thisUpdate) cannot miss it.
    now = timezone.now().replace(microsecond=0)
    record = Certificate.objects.select_for_update().get(pk=certificate.pk)
    record.ca = ca
    was_on_hold = record.is_on_hold
    if record.is_revoked and (not was_on_hold or chosen is _HOLD):
        raise _already_revoked(record)
    revoked_ca = _issued_ca(ca, record)
    if revoked_ca is not None and chosen is _HOLD:
        raise PkiError(
            f"{record.serial_number_display} is the certificate of CA {revoked_ca.name}; a CA "
            "cannot be put on hold (its certificates would all have to be held too). Revoke "
            "it with cACompromise, keyCompromise, superseded, cessationOfOperation or another "
            "final reason"
        )

    record.status = CertificateStatus.REVOKED
    record.revoked_at = now
    record.revocation_reason = chosen.value
    record.invalidity_date = invalid_since
    record.save(update_fields=["status", "revoked_at", "revocation_reason", "invalidity_date"])

    tree: list[tuple[CertificateAuthority, int]] = []
    tree_crls: dict[object, int | str] = {}
    if revoked_ca is not None:
        tree = _revoke_ca_tree(top=revoked_ca, reason=_cascade_reason(chosen), now=now)
        for member, _count in tree:
            tree_crls[member.pk] = _publish_below(member, actor)
    # A delta CRL, not a rebuild of the complete CRL (see pki.crl).
    crl = crl_delta_publish_locked(ca=ca, trigger=CRLTrigger.REVOCATION, actor=actor)

    details: dict[str, object] = {
        "ca": ca.name,
        "serial": record.serial_number_display,
        "subject": record.subject,
        "profile": record.profile,
        "reason": chosen.value,
        "revoked_at": now.isoformat(),
        "invalidity_date": invalid_since.isoformat() if invalid_since else None,
        "crl_number": crl.crl_number,
        "delta_crl": True,
    }
    if was_on_hold:
        details["previous_reason"] = _HOLD.value
    if revoked_ca is not None:
        details["revoked_ca"] = revoked_ca.name
        details["certificates_revoked_below"] = sum(count for _, count in tree)
    audit_event_record(
        action=PkiAction.CERTIFICATE_REVOKED,
        actor=actor,
        target=record,
        target_label=(record.subject or record.serial_number_display)[:255],
        details=details,
    )
    for member, count in tree:
        published = tree_crls[member.pk]
        audit_event_record(
            action=PkiAction.CA_REVOKED,
            actor=actor,
            target=member,
            target_label=member.name,
            details={
                "name": member.name,
                "subject": member.subject,
                "reason": member.revocation_reason,
                "revoked_through": f"certificate {record.serial_number_display} of CA {ca.name}",
                "certificates_revoked": count,
                "crl_number": published if isinstance(published, int) else None,
                "crl_problem": published if isinstance(published, str) else None,
            },
        )
    return record


def _publish_below(member: CertificateAuthority, actor: Actor) -> int | str:
    """Publish the CRL of a CA revoked with its parent: its number, or why it could not be.

    The revocation itself must not fail because a revoked CA's own key cannot sign (it may
    be exactly the key that was lost): the parent's CRL, which lists that CA, is what
    relying parties need. The problem is recorded in the ``ca.revoked`` event.
    """
    try:
        with transaction.atomic():
            return crl_publish_locked(
                ca=member, trigger=CRLTrigger.REVOCATION, actor=actor
            ).crl_number
    except PkiError as exc:
        return str(exc)


@transaction.atomic
def certificate_release(*, actor: Actor, certificate: Certificate) -> Certificate:
    """Take a certificate off hold (reason certificateHold): valid again, and absent from the
    CA's next CRL, published in the same transaction. Audited as ``certificate.released``.
    Anything but a hold raises :class:`PkiError` and changes nothing."""
    ca = _lock_ca(certificate.ca_id)
    record = Certificate.objects.select_for_update().get(pk=certificate.pk)
    record.ca = ca
    if not record.is_on_hold:
        state = (
            f"revoked for {record.revocation_reason or 'unspecified'}, which is final"
            if record.is_revoked
            else "not revoked"
        )
        raise PkiError(
            f"only a certificate on hold (certificateHold) can be released; certificate "
            f"{record.serial_number_display} of CA {ca.name} is {state}"
        )
    held_since = record.revoked_at
    record.status = CertificateStatus.VALID
    record.revoked_at = None
    record.revocation_reason = ""
    record.invalidity_date = None
    record.save(update_fields=["status", "revoked_at", "revocation_reason", "invalidity_date"])
    crl = crl_publish_locked(ca=ca, trigger=CRLTrigger.RELEASE, actor=actor)
    audit_event_record(
        action=PkiAction.CERTIFICATE_RELEASED,
        actor=actor,
        target=record,
        target_label=(record.subject or record.serial_number_display)[:255],
        details={
            "ca": ca.name,
            "serial": record.serial_number_display,
            "subject": record.subject,
            "held_since": held_since.isoformat() if held_since else None,
            "crl_number": crl.crl_number,
        },
    )
    return record


# --- reads for the pages and commands ------------------------------------------------------


@dataclass(frozen=True)
class RevocationPreview:
    """What a revocation would do: shown on the confirmation page."""

    certificate: Certificate
    reason: RevocationReason
    invalidity_date: datetime | None
    #: The intermediate CA whose certificate this is, and what its revocation takes along.
    revoked_ca: CertificateAuthority | None
    cas_below: list[str]
    certificates_below: int
    current_crl_number: int | None


def certificate_revocation_preview(
    *,
    certificate: Certificate,
    reason: RevocationReason | str,
    invalidity_date: datetime | None = None,
) -> RevocationPreview:
    """Check a revocation as :func:`certificate_revoke` would (reason, invalidity date,
    already revoked, hold on a CA) and say what it would take along; changes nothing."""
    chosen = _reason(reason)
    invalid_since = _invalidity_date(invalidity_date, chosen, timezone.now().replace(microsecond=0))
    record = (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .get(pk=certificate.pk)
    )
    if record.is_revoked and (not record.is_on_hold or chosen is _HOLD):
        raise _already_revoked(record)
    current = (
        RevocationList.objects.filter(ca_id=record.ca_id)
        .order_by("-crl_number")
        .values_list("crl_number", flat=True)
        .first()
    )
    top = None
    if record.profile == SUB_CA_PROFILE_NAME:
        top = (
            CertificateAuthority.objects.defer("sealed_private_key")
            .filter(parent_id=record.ca_id, serial_hex=record.serial_hex)
            .first()
        )
    if top is None:
        return RevocationPreview(record, chosen, invalid_since, None, [], 0, current)
    if chosen is _HOLD:
        raise PkiError(
            f"{record.serial_number_display} is the certificate of CA {top.name}; a CA cannot "
            "be put on hold. Choose a final reason such as cACompromise or cessationOfOperation"
        )
    names: list[str] = []
    ids = [top.pk]
    frontier = [top.pk]
    while frontier:
        children = list(
            CertificateAuthority.objects.filter(parent_id__in=frontier).values_list("pk", "name")
        )
        frontier = [pk for pk, _ in children]
        ids.extend(frontier)
        names.extend(name for _, name in children)
    below = (
        Certificate.objects.filter(ca_id__in=ids)
        .filter(
            Q(status=CertificateStatus.VALID)
            | Q(status=CertificateStatus.REVOKED, revocation_reason=_HOLD.value)
        )
        .count()
    )
    return RevocationPreview(record, chosen, invalid_since, top, names, below, current)


_SERIAL_TEXT = re.compile(r"(?:0[xX])?[0-9A-Fa-f:\s]+")


def certificate_by_serial(*, ca: CertificateAuthority, serial: str) -> Certificate:
    """The certificate ``ca`` issued with serial ``serial`` (hex, colons and a 0x prefix
    allowed, any case); :class:`PkiError` naming the problem otherwise."""
    text = (serial or "").strip()
    if not text or not _SERIAL_TEXT.fullmatch(text):
        raise PkiError(
            f"{serial!r} is not a serial number: give it in hexadecimal, e.g. 5A:3F:... or 5A3F..."
        )
    digits = re.sub(r"[:\s]", "", text.removeprefix("0x").removeprefix("0X")).upper()
    digits = digits.lstrip("0") or "0"
    if len(digits) > SERIAL_HEX_DIGITS:
        raise PkiError(f"{serial!r} is longer than any serial number this PKI issues (20 bytes)")
    record = (
        Certificate.objects.select_related("ca")
        .defer("ca__sealed_private_key")
        .filter(ca=ca, serial_hex=digits.zfill(SERIAL_HEX_DIGITS))
        .first()
    )
    if record is None:
        raise PkiError(f"CA {ca.name} issued no certificate with serial {digits}")
    return record
