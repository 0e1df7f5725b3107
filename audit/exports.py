"""Streamed exports of the audit log (JSON Lines and CSV), constant memory.

JSON Lines follows the format defined in kmsportal.crypto.audit_chain, so
`python -m kmsclient audit-verify export.jsonl` checks it offline. CSV carries the same
events, checkpoints and public key for spreadsheets; cells that a spreadsheet would run as a
formula are prefixed with an apostrophe, so verify the JSON Lines file, not the CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from kmsportal.crypto.audit_chain import (
    EVENT_FIELDS,
    export_checkpoint_line,
    export_event_line,
    export_header_line,
    export_public_key_line,
    format_time,
    public_key_from_pem,
)

from .models import AuditChainHead, AuditCheckpoint, AuditSigningKey
from .selectors import EventFilters, audit_event_queryset
from .services import details_json

CSV_COLUMNS = ["record", *EVENT_FIELDS, "prev_hash", "hash", "previous_signature", "signature"]
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _snapshot() -> int:
    """The newest sequence at export start: the export is a consistent prefix of the log."""
    head = AuditChainHead.objects.filter(pk=1).first()
    return head.sequence if head else 0


def _events(user: AbstractBaseUser, filters: EventFilters, up_to: int) -> Iterator[dict[str, Any]]:
    queryset = (
        audit_event_queryset(user=user, filters=filters)
        .filter(sequence__lte=up_to)
        .order_by("sequence")
    )
    for event in queryset.iterator(chunk_size=2000):
        fields = event.chain_fields()
        fields["prev_hash"] = event.prev_hash
        fields["hash"] = event.hash
        yield fields


def _checkpoints(up_to: int) -> Iterator[dict[str, Any]]:
    for checkpoint in AuditCheckpoint.objects.filter(sequence__lte=up_to).order_by("sequence"):
        yield checkpoint.chain_fields()


def export_jsonl(*, user: AbstractBaseUser, filters: EventFilters) -> Iterator[str]:
    """Header, matching events (ascending), every checkpoint, the public key: one per line."""
    up_to = _snapshot()  # a consistent snapshot of the log
    yield (
        export_header_line(exported_at=format_time(timezone.now()), filters=filters.as_dict())
        + "\n"
    )
    for event in _events(user, filters, up_to):
        yield export_event_line(event) + "\n"
    for checkpoint in _checkpoints(up_to):
        yield export_checkpoint_line(checkpoint) + "\n"
    key = AuditSigningKey.objects.first()
    if key is not None:
        yield export_public_key_line(public_key_from_pem(key.public_key_pem)) + "\n"


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def export_csv(*, user: AbstractBaseUser, filters: EventFilters) -> Iterator[str]:
    """The same content as CSV rows, with a `record` column: event, checkpoint, public_key."""
    writer = csv.writer(_Echo())
    up_to = _snapshot()
    yield writer.writerow(CSV_COLUMNS)
    for event in _events(user, filters, up_to):
        row = {**event, "record": "event", "details": details_json(event["details"])}
        yield writer.writerow([_cell(row.get(column, "")) for column in CSV_COLUMNS])
    for checkpoint in _checkpoints(up_to):
        row = {**checkpoint, "record": "checkpoint"}
        yield writer.writerow([_cell(row.get(column, "")) for column in CSV_COLUMNS])
    key = AuditSigningKey.objects.first()
    if key is not None:
        # The PEM starts with "-----": written as is, a key is not a formula.
        row = {"record": "public_key", "details": key.public_key_pem}
        yield writer.writerow([row.get(column, "") for column in CSV_COLUMNS])
