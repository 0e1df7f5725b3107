"""`manage.py audit_export --out FILE [filters] [--trusted-size N] [--format jsonl|csv]`:
the same export as the auditor's page, recorded as an audit event, ending with the signed
tree head (verify it with `python -m kmsclient audit-verify FILE --public-key key.pem`)."""

from __future__ import annotations

import os

from django.contrib.auth.models import AnonymousUser
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import exports, services
from audit.forms import EventFilterForm


class _System(AnonymousUser):
    """Commands run with the operator's shell access: they read the whole log."""

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return perm.startswith("audit.")


FILTERS = ("since", "until", "actor", "action", "target_type", "target_id", "outcome", "text")


class Command(BaseCommand):
    help = "Export the audit log (JSON Lines or CSV) ending with the signed tree head."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="file to write (- for standard output)")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        for name in FILTERS:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default="")
        parser.add_argument("--trusted-size", type=int, default=None)

    def handle(self, *args: object, **options: object) -> None:
        data = {name: options[name] for name in FILTERS if options[name]}
        if options["trusted_size"] is not None:
            data["trusted_size"] = options["trusted_size"]
        form = EventFilterForm(data)
        if not form.is_valid():
            raise CommandError(f"invalid filters: {form.errors.as_text()}")
        filters = form.filters()
        fmt = str(options["format"])
        services.audit_export_start(actor=None, fmt=fmt, filters=filters.as_dict())
        produce = exports.export_jsonl if fmt == "jsonl" else exports.export_csv
        chunks = produce(
            user=_System(), filters=filters, trusted_size=form.cleaned_data.get("trusted_size")
        )
        out = str(options["out"])
        if out == "-":
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for chunk in chunks:
                handle.write(chunk)
        self.stderr.write(f"Wrote {out}")
