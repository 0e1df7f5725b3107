"""The version 1 event form: hashed fields, UTC time strings, canonical JSON and the event hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

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


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (not ``\\u`` escapes), no NaN/Infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _reject_unserialisable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _make_chunk_encoder() -> Callable[[Any, int], Sequence[str]]:
    """The C JSON encoder with canonical settings, built once; ``json``'s public API if absent.

    Call it as ``"".join(encoder(obj, 0))``. ``json.dumps`` with non-default options builds a
    new ``JSONEncoder`` and a new C encoder on every call, which costs more than the SHA-256
    of a whole event; building the C encoder once is ~3x faster. ``markers=None`` skips the
    circular-reference check: values come from JSON or the database and cannot be circular.
    ``make_encoder`` is private, so a self-check against ``json.dumps`` guards against a
    Python where it behaves differently.
    """
    public = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode

    def fallback(obj: Any, _indent_level: int) -> Sequence[str]:
        return (public(obj),)

    try:
        from json.encoder import c_make_encoder

        if c_make_encoder is None:
            return fallback
        c_encoder = c_make_encoder(
            None, _reject_unserialisable, encode_basestring, None, ":", ",", True, False, False
        )
        samples = (
            {},
            {"z": [1, 2.5, -0.0, 10**30, None, True, 'é"\\\n\x00\u2028'], "a": {"y": "", "b": -3}},
            {"k": "Zoë", "list": [{}, [], {"b": 1, "a": [{"d": 2, "c": 1}]}]},
            "x",
            7,
        )
        if any("".join(c_encoder(obj, 0)) != public(obj) for obj in samples):
            return fallback
        return c_encoder
    except Exception:  # any surprise from a private API: use the public, slower one
        return fallback


_encode_chunks = _make_chunk_encoder()

# Escaping function of the json module (the C one when available), the very one json.dumps uses
# with ensure_ascii=False; used only to detect strings that need escaping, see _event_text.
_escape = encode_basestring

# All event fields in sorted key order, fetched with one C call on the hot path.
_SORTED_FIELDS = tuple(sorted(EVENT_FIELDS))
_get_sorted_fields = itemgetter(*_SORTED_FIELDS)
_get_link_fields = itemgetter("sequence", "prev_hash", "hash")


def _event_dict(event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {field: event[field] for field in EVENT_FIELDS}
    except KeyError as exc:
        raise KeyError(f"audit event is missing the field {exc.args[0]!r}") from None


def _event_text(event: Mapping[str, Any]) -> str:
    """Canonical JSON text of an event (before UTF-8 encoding): the hot path of verification.

    Equivalent to ``canonical_json(_event_dict(event)).decode()`` but about 3x faster: the
    top-level keys are fixed, so they are laid out in sorted order by an f-string, and only
    ``details`` goes through the JSON encoder. The string values are pasted in verbatim, which
    is only correct when none of them needs escaping (quote, backslash, control character);
    escaping their concatenation adds exactly the two surrounding quotes iff none does. Any
    other case (non-str values, a non-int sequence, strings with escapes) takes the general path.
    """
    try:
        (
            action,
            actor_id,
            actor_name,
            actor_type,
            details,
            outcome,
            request_id,
            sequence,
            source_ip,
            target_id,
            target_label,
            target_type,
            time,
        ) = _get_sorted_fields(event)
        joined = "".join(
            (
                action,
                actor_id,
                actor_name,
                actor_type,
                outcome,
                request_id,
                source_ip,
                target_id,
                target_label,
                target_type,
                time,
            )
        )
    except (KeyError, TypeError):  # missing field, or a value that is not a str
        return canonical_json(_event_dict(event)).decode("utf-8")
    # `type(...) is int` on purpose: bool is an int subclass but serialises as true/false.
    if type(sequence) is not int or len(_escape(joined)) != len(joined) + 2:
        return canonical_json(_event_dict(event)).decode("utf-8")
    if type(details) is dict and not details:
        details_text = "{}"
    else:
        details_text = "".join(_encode_chunks(details, 0))
    return (
        f'{{"action":"{action}","actor_id":"{actor_id}","actor_name":"{actor_name}",'
        f'"actor_type":"{actor_type}","details":{details_text},"outcome":"{outcome}",'
        f'"request_id":"{request_id}","sequence":{sequence},"source_ip":"{source_ip}",'
        f'"target_id":"{target_id}","target_label":"{target_label}",'
        f'"target_type":"{target_type}","time":"{time}"}}'
    )


def event_canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """Canonical JSON of ``event`` restricted to :data:`EVENT_FIELDS` (other keys are ignored).

    Raises ``KeyError`` naming the missing field, ``TypeError`` for values JSON cannot hold
    (e.g. a datetime: pass :func:`format_time` of it) and ``ValueError`` for NaN/Infinity.
    """
    return _event_text(event).encode("utf-8")


def event_hash(prev_hash: str, canonical: bytes) -> str:
    """``hex(SHA-256(bytes.fromhex(prev_hash) || canonical))``; ``prev_hash`` is 64 lowercase hex."""
    if not _is_hash(prev_hash):
        raise ValueError(f"prev_hash must be 64 lowercase hex digits, got {prev_hash!r}")
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def _is_hash(value: object) -> bool:
    """64 lowercase hex digits, the only spelling of a hash (links compare strings)."""
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        # fromhex accepts upper case and whitespace; the round trip refuses them.
        return bytes.fromhex(value).hex() == value
    except ValueError:
        return False


def _short(value: object) -> str:
    return value if isinstance(value, str) else repr(value)
