"""`manage.py createuser USERNAME --role ROLE [--role ROLE] [--email E]`."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from accounts.roles import Role


class Command(BaseCommand):
    help = "Create a user with one or more roles; prints a random password once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            action="append",
            required=True,
            dest="roles",
            help=f"one of: {', '.join(Role.values)} (repeat for several)",
        )
        parser.add_argument("--email", default="")

    def handle(
        self, *args: object, username: str, roles: list[str], email: str, **options: object
    ) -> None:
        try:
            parsed = [Role.parse(text) for text in roles]
            user, password = services.user_create(
                actor=None, username=username, email=email, roles=parsed
            )
        except (ValueError, services.AccountPolicyError) as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        labels = ", ".join(r.label for r in parsed)
        self.stdout.write(f"Created user {user.username} ({labels}).")
        self.stdout.write(f"Password (shown once, not stored in clear): {password}")
