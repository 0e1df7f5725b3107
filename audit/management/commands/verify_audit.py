"""`manage.py verify_audit [--from SEQ] [--exact]`: walk the chain and the checkpoints.

Exits 0 and prints how many events were verified, or prints the first broken link and
exits 1. The verification itself is recorded as an audit event. `--exact` walks the chain
with the exact Python verifier only, trusting nothing the database computes (slower).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain and signed checkpoints."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from", dest="from_sequence", type=int, default=1, help="first sequence to check"
        )
        parser.add_argument(
            "--exact",
            action="store_true",
            help="re-serialise every event in Python instead of using the database's fast path",
        )

    def handle(
        self, *args: object, from_sequence: int, exact: bool = False, **options: object
    ) -> None:
        if from_sequence < 1:
            raise CommandError("--from must be 1 or more")
        report = audit_chain_verify(actor=None, from_sequence=from_sequence, exact=exact)
        if not report.ok:
            self.stderr.write(f"TAMPERED: first broken link at event {report.broken_at}")
            self.stderr.write(f"  {report.problem}")
            raise SystemExit(1)
        self.stdout.write(
            f"OK: {report.events_verified} events verified "
            f"(from {from_sequence} to {report.head_sequence}), "
            f"{report.checkpoints_verified} checkpoints verified."
        )
