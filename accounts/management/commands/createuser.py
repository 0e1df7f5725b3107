"""`manage.py createuser USERNAME --role ROLE [--role ROLE] [--email E] [--reason TEXT]`.

Prints a one-time invitation link, never a password: the person sets their own. With two or
more active administrators the roles wait for an administrator's approval in the portal
(the request is the system's, so any administrator may approve it).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from accounts import services
from accounts.invitations import invitation_url
from accounts.roles import Role
from kmsportal.commands import KMSCommand


class Command(KMSCommand):
    help = "Create a user with one or more roles; prints a one-time invitation link."

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
        parser.add_argument(
            "--reason", default="", help="why (needed once two administrators exist)"
        )

    def handle(
        self,
        *args: object,
        username: str,
        roles: list[str],
        email: str,
        reason: str,
        **options: object,
    ) -> None:
        try:
            parsed = [Role.parse(text) for text in roles]
            created = services.user_create(
                actor=None, username=username, email=email, roles=parsed, reason=reason
            )
        except ValueError as exc:  # an unknown role
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        labels = ", ".join(r.label for r in parsed)
        user = created.user
        self.stdout.write(f"Created user {user.username} ({labels}).")
        if created.role_request is not None:
            self.stdout.write(
                "The roles wait for an administrator's approval in the portal (Approvals)."
            )
        self.stdout.write(
            "Invitation link (works once; shown once, only its hash is stored): "
            + invitation_url(created.invitation_token)
        )
        self.stdout.write(
            f"{user.username} sets their own password there, and their authenticator app at "
            "the first sign-in."
        )
