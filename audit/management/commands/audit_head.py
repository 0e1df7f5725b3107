"""`manage.py audit_head [--consistency-from SIZE]`: integrate, then print the newest signed
tree head as JSON (keep it: `kmsclient audit-verify --trusted-head` checks later exports
against it). With `--consistency-from`, also print the consistency proof from that size."""

from __future__ import annotations

import json

from django.core.management.base import CommandError, CommandParser

from audit.sequencer import audit_integrate, proof_consistency, tree_head_json
from kmsportal.commands import KMSCommand


class Command(KMSCommand):
    help = "Integrate committed audit events into the tree and print the newest signed head."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consistency-from", type=int, default=None, metavar="SIZE")

    def handle(self, *args: object, consistency_from: int | None = None, **options: object) -> None:
        result = audit_integrate()
        if result.head is None:
            raise CommandError("the audit log is empty: no tree head to sign yet")
        head = tree_head_json(result.head)
        self.stdout.write(json.dumps(head.as_json(), sort_keys=True))
        if consistency_from is not None:
            if not 0 <= consistency_from <= head.tree_size:
                raise CommandError(f"--consistency-from must be between 0 and {head.tree_size}")
            proof = proof_consistency(consistency_from, head.tree_size)
            self.stdout.write(
                json.dumps(
                    {
                        "type": "consistency",
                        "from_size": consistency_from,
                        "to_size": head.tree_size,
                        "proof": [p.hex() for p in proof],
                    },
                    sort_keys=True,
                )
            )
