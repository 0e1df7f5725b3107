"""`manage.py mfa_reset USERNAME`: break-glass reset of a user's multi-factor sign-in.

For when the only administrator lost their phone and their recovery codes: whoever can run
commands on the server (and so already holds the master keyring) removes the authenticator;
the user enrols a new one at their next sign-in. Audited as `auth.mfa_reset` with the system
as the actor.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import CommandError, CommandParser

from accounts import mfa
from kmsportal.commands import KMSCommand


class Command(KMSCommand):
    help = "Remove a user's authenticator app and recovery codes (lost phone); audited."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: object, username: str, **options: object) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        mfa.mfa_reset(actor=None, user=user)
        self.stdout.write(
            f"Two-factor sign-in of {user.username} was reset; their sessions end at their next "
            "request. They enrol a new authenticator app at their next sign-in."
        )
