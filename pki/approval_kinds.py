"""CA revocation as the shared two-person inbox and confirmation page show it."""

from __future__ import annotations

from typing import Any

from kmsportal.two_person import Confirmation, Decision, TwoPersonKind, two_person_kind_register

from . import approvals
from .errors import PkiError
from .models import CARevocationRequest
from .revocation import certificate_revocation_preview
from .selectors import REVOKE, VIEW_CA_REVOCATION_REQUEST


def _confirmation(request: CARevocationRequest) -> Confirmation:
    certificate = request.certificate
    changes = [
        ("CA", request.ca.name),
        (
            "Its certificate",
            f"serial {certificate.serial_number_display}, issued by {certificate.ca.name}",
        ),
        ("Subject", certificate.subject),
        ("Certificate SHA-256", certificate.fingerprint_sha256),
        ("RFC 5280 reason", request.reason),
    ]
    if request.invalidity_date:
        changes.append(("Key compromised since", f"{request.invalidity_date:%Y-%m-%d %H:%M} UTC"))
    try:
        preview = certificate_revocation_preview(
            certificate=certificate, reason=request.reason, invalidity_date=request.invalidity_date
        )
    except PkiError as exc:
        affected = [("Cannot be approved as it stands", str(exc))]
    else:
        affected = [
            ("CAs revoked with it", ", ".join([request.ca.name, *preview.cas_below])),
            ("Certificates revoked below it", str(preview.certificates_below)),
            ("CRLs republished", f"{certificate.ca.name} and every revoked CA's"),
        ]
    return Confirmation(
        title=f"Revoke CA {request.ca.name}",
        changes=changes,
        affected=affected,
        warning="Revocation is for good: the CA and everything below it stop being trusted.",
    )


def _approve(*, actor: Any, request: CARevocationRequest) -> Decision:
    revoked = approvals.ca_revocation_approve(actor=actor, request=request)
    return Decision(
        f"Approved: CA {request.ca.name} is revoked ({revoked.revocation_reason}) with "
        "everything below it; the CRLs were republished."
    )


def register() -> None:
    two_person_kind_register(
        TwoPersonKind(
            slug="ca-revocation",
            label="CA revocation",
            model=CARevocationRequest,
            permission=REVOKE,
            visible=VIEW_CA_REVOCATION_REQUEST,
            summary=lambda r: f"revoke CA {r.ca.name} ({r.reason})",
            confirmation=_confirmation,
            approve=_approve,
            reject=approvals.ca_revocation_reject,
            withdraw=approvals.ca_revocation_withdraw,
            related=("ca", "certificate", "certificate__ca"),
            why=lambda r: f"{r.reason}: {r.comment}" if r.comment else r.reason,
        )
    )
