"""`manage.py verify_audit [--exact]`: verify the whole audit log.

Checks the trust anchor (the database's signing keys against their keyring-sealed private
keys and KMS_AUDIT_PUBLIC_KEYS), the version 1 chain, every leaf of the tree, every signed
tree head, and the MAC of every event not yet integrated. Exits 0 with a summary, or prints
the problem and exits 1. The verification is recorded as an audit event. `--exact` walks the
version 1 chain with the Python verifier only, trusting nothing the database computes.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.checking import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit log: trust anchor, tree, signed heads and pending events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from", dest="from_sequence", type=int, default=1, help="kept for compatibility"
        )
        parser.add_argument(
            "--exact",
            action="store_true",
            help="re-serialise every version 1 event in Python instead of the database's fast path",
        )

    def handle(
        self, *args: object, from_sequence: int, exact: bool = False, **options: object
    ) -> None:
        if from_sequence < 1:
            raise CommandError("--from must be 1 or more")
        report = audit_chain_verify(actor=None, from_sequence=from_sequence, exact=exact)
        if not report.ok:
            where = f" at event {report.broken_at}" if report.broken_at is not None else ""
            self.stderr.write(f"TAMPERED: verification failed{where}")
            self.stderr.write(f"  {report.problem}")
            raise SystemExit(1)
        heads = report.heads_verified
        self.stdout.write(
            f"OK: {report.events_verified} events verified: tree of {report.tree_size} leaves, "
            f"{heads} signed tree heads, {report.checkpoints_verified} version 1 checkpoints, "
            f"{report.pending} events awaiting the sequencer (MACs verified)."
        )
        if heads == 0:
            self.stdout.write(
                "note: no signed tree head yet; run `manage.py audit_head` to sign one."
            )
