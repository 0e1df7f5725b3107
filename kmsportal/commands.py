"""What every management command shares: the one place a refusal becomes a command-line error.

:class:`KMSCommand` turns a :class:`KMSError` raised anywhere in ``handle`` into a
``CommandError`` carrying ``exc.message``: one line on standard error, exit status 1, no
traceback. Commands are thin (parse, call one service, print) and catch nothing of their own
unless they go on after a refusal (``publish_crls`` reports each CA).

:class:`ScheduledCommand` is the cron shape on top of it: ``[--wait]``, one run at a time
across nodes (``kmsportal.locks``), the work inside the lock, the report after it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kmsportal.crypto.errors import KMSError
from kmsportal.locks import add_wait_argument, exclusive_job, skipped_message

__all__ = ["KMSCommand", "ScheduledCommand"]


class KMSCommand(BaseCommand):
    """A management command whose domain refusals end it with the refusal's message."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except KMSError as exc:
            raise CommandError(exc.message) from exc


class ScheduledCommand(KMSCommand):
    """A cron job: ``job`` names its lock; :meth:`run` does the work, :meth:`report` prints."""

    job: str

    def add_arguments(self, parser: CommandParser) -> None:
        add_wait_argument(parser)

    def handle(self, *args: object, **options: Any) -> None:
        with exclusive_job(self.job, wait=bool(options["wait"])) as acquired:
            if not acquired:
                self.stdout.write(skipped_message(self.job))
                return
            done = self.run(**options)
        self.report(done)

    def run(self, **options: Any) -> Any:
        """Do the job (inside the lock); what it returns goes to :meth:`report`."""
        raise NotImplementedError

    def report(self, done: Any) -> None:
        """Print what :meth:`run` did (after the lock is released)."""
