"""`manage.py grant_create CLIENT KEY [--operations fetch,encrypt,...] [--versions primary|all]
[--expires ISO]`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from vault.distribution import grant_create
from vault.management import client_by_name, domain_errors, key_by_name, parse_time
from vault.models import GrantVersions


class Command(BaseCommand):
    help = "Allow a client service to fetch a key, or to use it through the operations API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client")
        parser.add_argument("key")
        parser.add_argument(
            "--operations",
            default="fetch",
            help="comma-separated: fetch (release the key), encrypt, decrypt, reencrypt, "
            "generate-data-key, mac, mac-verify, sign, verify, public-key; default fetch",
        )
        parser.add_argument("--versions", choices=GrantVersions.values, default="primary")
        parser.add_argument("--expires", help="ISO 8601 time, e.g. 2030-01-31T00:00:00Z")

    def handle(
        self,
        *args: object,
        client: str,
        key: str,
        versions: str,
        expires: str | None,
        operations: str,
        **options: object,
    ) -> None:
        target_client = client_by_name(client)
        target_key = key_by_name(key)
        expires_at = parse_time(expires, "--expires")
        with domain_errors():
            grant = grant_create(
                actor=None,
                client=target_client,
                key=target_key,
                versions=versions,
                expires_at=expires_at,
                operations=operations,
            )
        until = f" until {grant.expires_at:%Y-%m-%d %H:%M} UTC" if grant.expires_at else ""
        self.stdout.write(
            f"Granted {target_key.name} ({grant.get_versions_display()}) to "
            f"{target_client.name}{until}."
        )
        if grant.operations != "fetch":
            self.stdout.write(f"Operations: {grant.operations}.")
