"""What the version 1 and version 2 JSON Lines exports share: the strict line decoder and the
header line.

An export line is read by a decoder that refuses duplicate keys (``json`` keeps the last one,
while a person reading the line may see the first: a line that reads differently to people
and to the verifier is refused), floats (audit records hold none, and canonical JSON refuses
them) and the non-JSON constants ``NaN`` and ``Infinity``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kmsportal.crypto.canonical import canonical_json

__all__ = ["EXPORT_FORMAT", "LINE_DECODER", "header_line"]

#: ``format`` of the export header line, in every version.
EXPORT_FORMAT = "kmsportal-audit-export"


def _reject_float(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer: audit records hold no fractions")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


#: Decodes one export line (``decode`` or ``raw_decode``); ``ValueError`` for what it refuses.
LINE_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_keys, parse_float=_reject_float, parse_constant=_reject_constant
)


def header_line(*, version: int, exported_at: str, filters: Mapping[str, Any]) -> str:
    """The header line of an export (``filters`` empty for a complete export); no newline."""
    return canonical_json(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "version": version,
            "exported_at": exported_at,
            "filters": dict(filters),
        }
    ).decode("utf-8")
