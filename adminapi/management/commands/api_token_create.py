"""`manage.py api_token_create USERNAME --scope read-only|roles --days N [--name NAME]`.

Prints a personal API token for USERNAME once, on standard output alone (for CI and scripts:
`TOKEN=$(manage.py api_token_create ci-bot --scope read-only --days 1)`); only its hash is
stored. Whoever runs commands on the server already holds the master keyring, so this skips
the portal's second-factor step; it is audited as `api.token_created` with the system as actor.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from adminapi.models import TokenScope
from adminapi.tokens import MAX_DAYS, ApiTokenError, api_token_create


class Command(BaseCommand):
    help = "Make a personal API token for a user and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--scope", choices=TokenScope.values, default=TokenScope.READ_ONLY)
        parser.add_argument("--days", type=int, default=30, help=f"1 to {MAX_DAYS}")
        parser.add_argument("--name", default="", help="what uses it (default: 'command line')")

    def handle(self, *args: object, username: str, days: int, **options: object) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        try:
            created = api_token_create(
                actor=None,
                user=user,
                name=str(options["name"] or "command line"),
                scope=str(options["scope"]),
                days=days,  # argparse made it an int (type=int)
            )
        except ApiTokenError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(
            f"Token {created.token.name!r} for {user.username} ({created.token.scope}, expires "
            f"{created.token.expires_at:%Y-%m-%d %H:%M} UTC). Shown once; only its hash is kept."
        )
        self.stdout.write(created.secret)
