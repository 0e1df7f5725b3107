"""`manage.py publish_crls [--ca NAME] [--force] [--wait]`: keep every CA's CRL current.

Publishes a new complete CRL and its delta CRL for each CA (or only NAME) whose current CRL
(or delta CRL) is past half its lifetime, that has none, or whose delta CRL lists revocations
while the complete CRL is older than KMS_CRL_REBASE_AFTER; with --force, for each one
regardless. Also renews each CA's delegated
OCSP responder certificate when it nears expiry. Idempotent and safe to run concurrently:
run it from cron every few minutes (every minute is fine) so that no CRL ever reaches its
nextUpdate, after which relying parties refuse the CA's certificates. With several nodes,
run it from every node's crontab: one run at a time does the work (kmsportal.locks), the
others print "another node is running publish_crls; nothing to do" and exit 0.

Exit status 0 when every CA is current, 1 when one could not be published (the others still
are; the message names the CA and the reason).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import ScheduledCommand
from pki.errors import PkiError
from pki.management import ca_by_name
from pki.models import CertificateAuthority, CRLTrigger
from pki.ocsp import ocsp_responder_ensure
from pki.services import crl_publish


class Command(ScheduledCommand):
    job = "publish_crls"
    help = "Publish CRLs that are past half their lifetime (or all, with --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", default=None, help="only this CA")
        parser.add_argument(
            "--force", action="store_true", help="publish even if the current CRL is fresh"
        )
        super().add_arguments(parser)

    def run(self, **options: Any) -> None:
        ca_name = str(options["ca"]) if options["ca"] else None
        self._publish(ca_name=ca_name, force=bool(options["force"]))

    def _publish(self, *, ca_name: str | None, force: bool) -> None:
        if ca_name:
            cas = [ca_by_name(ca_name)]
        else:
            cas = list(CertificateAuthority.objects.defer("sealed_private_key").order_by("name"))
        trigger = CRLTrigger.MANUAL if force else CRLTrigger.SCHEDULED
        failures: list[str] = []
        for ca in cas:
            try:
                row = crl_publish(actor=None, ca=ca, trigger=trigger, force=force)
            except PkiError as exc:
                failures.append(f"{ca.name}: {exc}")
                self.stderr.write(f"{ca.name}: no CRL published: {exc}")
                continue
            if row is None:
                current = (
                    ca.crls.filter(is_delta=False).order_by("-crl_number").defer("crl_der").first()
                )
                assert current is not None  # not due means there is one
                self.stdout.write(
                    f"{ca.name}: CRL #{current.crl_number} is current (next update "
                    f"{current.next_update:%Y-%m-%d %H:%M} UTC; replaced after "
                    f"{current.republish_after:%Y-%m-%d %H:%M} UTC)"
                )
            else:
                self.stdout.write(
                    f"{ca.name}: published CRL #{row.crl_number} with {row.entry_count} "
                    f"entries and delta CRL #{row.crl_number + 1}, next update "
                    f"{row.next_update:%Y-%m-%d %H:%M} UTC"
                )
            try:
                ocsp_responder_ensure(ca=ca)
            except PkiError as exc:
                failures.append(f"{ca.name} (OCSP responder): {exc}")
                self.stderr.write(f"{ca.name}: OCSP responder not renewed: {exc}")
        if failures:
            raise CommandError(f"{len(failures)} problem(s): " + "; ".join(failures))
