"""`manage.py grant_create CLIENT KEY --actor USERNAME --reason TEXT
[--operations fetch,encrypt,...] [--versions primary|all] [--expires ISO]`.

A grant lets a client fetch the key's material, so the command acts for a named portal user
(``--actor``, a key custodian) and follows the key's export policy like the portal: refused
for ``never``, a request a second custodian approves in the portal for ``two-person`` (the
default), the grant itself for ``single``. The command never approves anything. (Whoever
holds the server's shell and master keyring is outside what two-person rules can stop; see
docs/separation-of-duties.md.)

``--operations`` names what the client may do (issue 17, docs/operations-api.md); a grant
without ``fetch`` releases no key material and is made at once whatever the export policy.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import KMSCommand
from vault.approvals import GRANT_PERMISSION, grant_request_create
from vault.management import client_by_name, key_by_name, parse_time
from vault.models import GrantVersions


def portal_actor(username: str, permission: str) -> User:
    """The active portal user the command acts for, holding ``permission``."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"--actor: no active portal user named {username!r}")
    if not user.has_perm(permission):
        raise CommandError(f"--actor: {username} lacks the {permission} permission")
    return user


class Command(KMSCommand):
    help = "Ask for (or, for a key whose export policy is 'single', make) a client's grant."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client")
        parser.add_argument("key")
        parser.add_argument(
            "--actor", required=True, help="the portal user (key custodian) asking for it"
        )
        parser.add_argument("--reason", required=True, help="why the client needs the key")
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
        actor: str,
        reason: str,
        versions: str,
        expires: str | None,
        operations: str,
        **options: object,
    ) -> None:
        user = portal_actor(actor, GRANT_PERMISSION)
        target_client = client_by_name(client)
        target_key = key_by_name(key)
        expires_at = parse_time(expires, "--expires")
        outcome = grant_request_create(
            actor=user,
            client=target_client,
            key=target_key,
            versions=versions,
            expires_at=expires_at,
            reason=reason,
            operations=operations,
        )
        if outcome.request is not None:
            self.stdout.write(
                f"Asked for the grant of {target_key.name} to {target_client.name} (request "
                f"{outcome.request.pk}, as {user.username}). A second key custodian must approve "
                f"it in the portal: /approvals/grant/{outcome.request.pk}/"
            )
            return
        grant = outcome.grant
        assert grant is not None  # no second approval needed: granted at once
        until = f" until {grant.expires_at:%Y-%m-%d %H:%M} UTC" if grant.expires_at else ""
        self.stdout.write(
            f"Granted {target_key.name} ({grant.get_versions_display()}) to "
            f"{target_client.name}{until} "
            + (
                "(export policy 'single')."
                if grant.releases_key_material
                else f"(operations {grant.operations}: no key material leaves the KMS)."
            )
        )
