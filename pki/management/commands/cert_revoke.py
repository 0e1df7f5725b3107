"""`manage.py cert_revoke --ca NAME --serial HEX (--reason R [--invalidity-date ISO] |
--release)`.

Revokes the certificate with that serial number (hex, colons allowed) that CA NAME issued,
for an RFC 5280 reason, and publishes the CA's next CRL in the same transaction; or, with
--release, takes a certificate off hold. The certificate of an intermediate CA is refused:
revoking a CA needs a second person's approval (two-person rule), so it is asked for and
approved in the portal (CA revocation approvals), never here in one step. Bad input ends
with a one-line error and exit status 1; nothing changes.
"""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from kmsportal.commands import KMSCommand
from pki.management import ca_by_name
from pki.revocation import REVOCATION_REASONS
from pki.selectors import ca_of_certificate
from pki.services import (
    certificate_by_serial,
    certificate_release,
    certificate_revocation_preview,
    certificate_revoke,
)

REASONS = [reason.value for reason in REVOCATION_REASONS]


def _invalidity_date(text: str) -> datetime:
    """ISO 8601 date or date and time; without a zone it is UTC."""
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime(day.year, day.month, day.day) if day is not None else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(
            f"--invalidity-date: {text!r} is not an ISO 8601 date or date and time, e.g. "
            "2026-05-01 or 2026-05-01T13:45:00Z"
        )
    return moment


class Command(KMSCommand):
    help = "Revoke a certificate (RFC 5280 reason) and republish the CRL, or release a hold."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", required=True, help="name of the CA that issued it")
        parser.add_argument(
            "--serial", required=True, metavar="HEX", help="serial number in hex (colons allowed)"
        )
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument(
            "--reason", metavar="REASON", help=f"one of: {', '.join(REASONS)} (case matters)"
        )
        action.add_argument(
            "--release", action="store_true", help="take a certificate off hold (certificateHold)"
        )
        parser.add_argument(
            "--invalidity-date",
            metavar="ISO",
            default=None,
            help="with keyCompromise or cACompromise: since when the key is known or "
            "suspected to be compromised (ISO 8601, UTC unless a zone is given)",
        )

    def handle(self, *args: object, **options: object) -> None:
        ca = ca_by_name(str(options["ca"]))
        certificate = certificate_by_serial(ca=ca, serial=str(options["serial"]))
        if options["release"]:
            if options["invalidity_date"]:
                raise CommandError("--invalidity-date goes with --reason, not --release")
            released = certificate_release(actor=None, certificate=certificate)
            self.stdout.write(
                f"Released the hold on serial {released.serial_number_display} of CA "
                f"{ca.name}; it is valid again and the CRL was republished without it."
            )
            return
        certified = ca_of_certificate(certificate=certificate)
        if certified is not None:
            raise CommandError(
                f"serial {certificate.serial_number_display} is the certificate of CA "
                f"{certified.name}: revoking a CA needs a second person's approval (two-person "
                "rule). Ask for it on the certificate's revoke page in the portal; a second CA "
                "operator approves it under CA revocation approvals. Nothing was changed."
            )
        invalid_since = (
            _invalidity_date(str(options["invalidity_date"]))
            if options["invalidity_date"]
            else None
        )
        preview = certificate_revocation_preview(
            certificate=certificate,
            reason=str(options["reason"]),
            invalidity_date=invalid_since,
        )
        revoked = certificate_revoke(
            actor=None,
            certificate=certificate,
            reason=preview.reason,
            invalidity_date=invalid_since,
        )
        crl = revoked.ca.crls.order_by("-crl_number").values_list("crl_number", flat=True).first()
        self.stdout.write(
            f"Revoked serial {revoked.serial_number_display} of CA {ca.name} "
            f"({revoked.subject or 'no subject'}): {revoked.revocation_reason}"
            + (
                f", key compromised since {revoked.invalidity_date:%Y-%m-%d %H:%M:%S} UTC"
                if revoked.invalidity_date
                else ""
            )
            + f". CRL #{crl} published."
        )
