"""The version 1 event form: hashed fields, UTC time strings and the event hash.

The canonical JSON is RFC 8785 (:mod:`kmsportal.crypto.canonical`), as for version 2 entries.
Version 1 hashed ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)``; for the values an event holds (strings, integers, booleans, null, lists
and objects, no floats) the two give the same bytes, except when two keys of one object
differ first at a character beyond U+FFFF against one in U+E000..U+FFFF (code point order
against UTF-16 order). ``tests/crypto/test_audit_chain.py`` checks the equality with random
events; event detail keys are names chosen by the code, never such characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kmsportal.crypto.canonical import canonical_json

__all__ = [
    "EVENT_FIELDS",
    "GENESIS_HASH",
    "canonical_json",
    "event_canonical_bytes",
    "event_hash",
    "format_time",
]

#: ``prev_hash`` of the first event of the log.
GENESIS_HASH = "0" * 64

#: The hashed fields of an audit event, in documentation order (hashing sorts the keys).
EVENT_FIELDS: tuple[str, ...] = (
    "sequence",
    "time",
    "actor_type",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "outcome",
    "source_ip",
    "request_id",
    "details",
)

# --------------------------------------------------------------------------- canonical form


def format_time(dt: datetime) -> str:
    """Format an aware datetime as the UTC string used in events: ``2026-11-28T14:42:19.123456Z``.

    Naive datetimes are rejected with ``ValueError``: guessing their zone would make the hash
    depend on the machine that computed it.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("format_time needs an aware datetime; got a naive one")
    u = dt.astimezone(UTC)
    # Fixed-width fields by hand: strftime("%Y") does not zero-pad years < 1000 on glibc.
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T"
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}Z"
    )


def event_dict(event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {field: event[field] for field in EVENT_FIELDS}
    except KeyError as exc:
        raise KeyError(f"audit event is missing the field {exc.args[0]!r}") from None


def event_canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """Canonical JSON of ``event`` restricted to :data:`EVENT_FIELDS` (other keys are ignored).

    Raises ``KeyError`` naming the missing field and ``TypeError`` for values canonical JSON
    cannot hold (a float, or e.g. a datetime: pass :func:`format_time` of it).
    """
    return canonical_json(event_dict(event))


def event_hash(prev_hash: str, canonical: bytes) -> str:
    """``hex(SHA-256(bytes.fromhex(prev_hash) || canonical))``; ``prev_hash`` is 64 lowercase hex."""
    if not is_hash(prev_hash):
        raise ValueError(f"prev_hash must be 64 lowercase hex digits, got {prev_hash!r}")
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def is_hash(value: object) -> bool:
    """64 lowercase hex digits, the only spelling of a hash (links compare strings)."""
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        # fromhex accepts upper case and whitespace; the round trip refuses them.
        return bytes.fromhex(value).hex() == value
    except ValueError:
        return False


def as_text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)
