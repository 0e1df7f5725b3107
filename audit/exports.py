"""Streamed exports of the audit log (JSON Lines and CSV), constant memory.

JSON Lines follows version 2 of the format defined in kmsportal.crypto.audit_log, so
`python -m kmsclient audit-verify export.jsonl --public-key key.pem` checks it offline: the
events integrated into the tree, in leaf order (a filtered export adds each event's inclusion
proof), optionally a consistency proof from an auditor's saved head, the public key, and last
the signed tree head that covers them. Export starts by integrating everything committed, so
the head covers the newest events. CSV carries the same rows for spreadsheets; cells a
spreadsheet would run as a formula are prefixed with an apostrophe, so verify the JSON Lines
file, not the CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

from kmsportal.crypto.audit_chain import EVENT_FIELDS, format_time, public_key_from_pem
from kmsportal.crypto.audit_log import (
    export_consistency_line,
    export_event_line,
    export_header_line,
    export_public_key_line,
)

from .models import AuditTreeHead
from .selectors import EventFilters, audit_event_queryset
from .sequencer import latest_head, proof_consistency, proof_inclusion, tree_head_json
from .services import details_json

CSV_COLUMNS = ["record", "leaf_index", *EVENT_FIELDS, "hash", "signature"]
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _events(
    user: User | AnonymousUser, filters: EventFilters, head: AuditTreeHead
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(leaf index, event fields) of the matching events covered by ``head``, in leaf order."""
    queryset = (
        audit_event_queryset(user=user, filters=filters)
        .filter(leaf__leaf_index__lt=head.tree_size)
        .order_by("leaf__leaf_index")
        .values_list("leaf__leaf_index", *EVENT_FIELDS)
    )
    for row in queryset.iterator(chunk_size=2000):
        fields = dict(zip(EVENT_FIELDS, row[1:], strict=True))
        fields["time"] = format_time(fields["time"])
        yield row[0], fields


def export_jsonl(
    *, user: User | AnonymousUser, filters: EventFilters, trusted_size: int | None = None
) -> Iterator[str]:
    """Header, matching events (leaf order), [consistency], public key, signed head."""
    head = latest_head()
    partial = bool(filters.as_dict())
    yield (
        export_header_line(exported_at=format_time(timezone.now()), filters=filters.as_dict())
        + "\n"
    )
    if head is None:
        return  # nothing is signed: the file ends without a head, and verifiers refuse it
    for index, fields in _events(user, filters, head):
        proof = proof_inclusion(index, head.tree_size) if partial else None
        yield export_event_line(fields, leaf_index=index, inclusion=proof) + "\n"
    if trusted_size is not None and 0 < trusted_size <= head.tree_size:
        yield (
            export_consistency_line(
                from_size=trusted_size,
                to_size=head.tree_size,
                proof=proof_consistency(trusted_size, head.tree_size),
            )
            + "\n"
        )
    yield export_public_key_line(public_key_from_pem(head.signing_key.public_key_pem)) + "\n"
    yield tree_head_json(head).line() + "\n"


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def export_csv(
    *, user: User | AnonymousUser, filters: EventFilters, trusted_size: int | None = None
) -> Iterator[str]:
    """The same events as CSV rows, with a `record` column, ending with the signed head."""
    writer = csv.writer(_Echo())
    head = latest_head()
    yield writer.writerow(CSV_COLUMNS)
    if head is None:
        return
    for index, fields in _events(user, filters, head):
        row = {
            **fields,
            "record": "event",
            "leaf_index": index,
            "details": details_json(fields["details"]),
        }
        yield writer.writerow([_cell(row.get(column, "")) for column in CSV_COLUMNS])
    signed = tree_head_json(head)
    row = {
        "record": "tree_head",
        "leaf_index": head.tree_size,
        "hash": head.root_hash,
        "time": signed.timestamp,
        "signature": signed.signature,
        "details": signed.line(),
    }
    yield writer.writerow([_cell(row.get(column, "")) for column in CSV_COLUMNS])
