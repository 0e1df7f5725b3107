"""`manage.py client_create NAME [--description D]`: register a client service."""

from __future__ import annotations

from django.core.management.base import CommandParser

from kmsportal.commands import KMSCommand
from vault.clients import client_create


class Command(KMSCommand):
    help = "Register a client service and print its one-time enrollment token (valid 24 h)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--description", default="")

    def handle(self, *args: object, name: str, description: str, **options: object) -> None:
        client, token = client_create(actor=None, name=name, description=description)
        self.stdout.write(f"Registered client {client.name}.")
        self.stdout.write(
            f"Enrollment token (shown once, single use, expires "
            f"{client.enrollment_token_expires_at:%Y-%m-%d %H:%M} UTC): {token}"
        )
