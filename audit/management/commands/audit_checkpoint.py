"""`manage.py audit_checkpoint [--wait]`: kept for existing crontabs; integrates committed
events and signs a tree head (the sequencer thread of the web processes does this every few
seconds anyway). One run at a time across nodes; the others skip and exit 0."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from audit.sequencer import JOB, audit_integrate
from kmsportal.locks import add_wait_argument, skipped_message


class Command(BaseCommand):
    help = "Integrate committed audit events and sign a tree head (see also audit_head)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: object) -> None:
        result = audit_integrate(wait=bool(options["wait"]))
        if result.skipped:
            self.stdout.write(skipped_message(JOB))
        elif result.head is None:
            self.stdout.write("The audit log is empty; nothing signed.")
        else:
            self.stdout.write(
                f"Integrated {result.integrated} events; signed tree head of size "
                f"{result.head.tree_size} (root {result.head.root_hash})."
            )
