"""`manage.py client_revoke NAME --reason R`: revoke a client and its certificate."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from vault.clients import CLIENT_REVOCATION_REASONS, client_revoke
from vault.management import client_by_name


class Command(KMSCommand):
    help = "Revoke a client service for good; its certificate is revoked in the same transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--reason", required=True, choices=CLIENT_REVOCATION_REASONS)

    def handle(self, *args: object, name: str, reason: str, **options: object) -> None:
        client = client_by_name(name)
        client = client_revoke(actor=None, client=client, reason=reason)
        serial = (
            f" and its certificate {client.certificate.serial_hex}" if client.certificate else ""
        )
        self.stdout.write(f"Revoked client {client.name}{serial} ({reason}).")
