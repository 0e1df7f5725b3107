"""Hash chain and signed checkpoints of the audit log, shared by the server and offline verifiers.

Pure Python over ``hashlib``, ``json`` and ``cryptography``: no Django, nothing outside
``kmsportal.crypto``, so ``python -m kmsclient audit-verify`` can check an export on a machine
that has never seen the portal.

Event hash
==========

Every audit event is a JSON object with exactly the fields in :data:`EVENT_FIELDS`::

    sequence      int, 1, 2, 3, ... without gaps
    time          str, UTC, ISO 8601 with microseconds and "Z": "2026-11-28T14:42:19.123456Z"
    actor_type    str, "user" | "client" | "system"
    actor_id      str, may be ""
    actor_name    str
    action        str
    target_type   str
    target_id     str
    target_label  str
    outcome       str, "success" | "denied" | "error"
    source_ip     str, may be ""
    request_id    str
    details       JSON object

``hash = SHA-256(bytes.fromhex(prev_hash) || canonical_json(event restricted to EVENT_FIELDS))``
as 64 lowercase hex digits, where ``prev_hash`` is the previous event's ``hash`` and the first
event's ``prev_hash`` is :data:`GENESIS_HASH`. Canonical JSON is
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
encoded as UTF-8 (see :func:`canonical_json`). Because the sequence number is inside the hashed
content and every hash covers its predecessor, editing, inserting, deleting or reordering a row
breaks the chain at that row.

Signed checkpoints
==================

Periodically the server signs the head of the chain with its Ed25519 audit key, like AWS
CloudTrail digest files. A checkpoint is::

    {"sequence": N, "hash": <hash of event N>, "time": <UTC time string>,
     "previous_signature": <base64 signature of the previous checkpoint, "" for the first>,
     "signature": <base64 Ed25519 signature over checkpoint_payload(...)>}

The signed payload is ``canonical_json({"sequence", "hash", "time", "previous_signature"})``.
Checkpoints form their own chain through ``previous_signature``, so a checkpoint cannot be
dropped or reordered without detection, and a signed checkpoint for event N proves that events
1..N existed with exactly that content when it was signed: truncating the log's tail below a
checkpoint is detectable. Checkpoint sequences are strictly increasing, so the server must not
sign a new checkpoint unless events were appended since the previous one.

Export format (JSON Lines), version 1
=====================================

UTF-8, one JSON object per line, every object has a ``"type"`` key. In this order:

1. exactly one header, first::

       {"type":"header","format":"kmsportal-audit-export","version":1,
        "exported_at":"2026-11-28T14:42:19.123456Z","filters":{...}}

   ``filters`` is ``{}`` for a complete export of the whole log; any non-empty ``filters``
   object marks a partial export (the server writes the filters the auditor chose). The header
   is **not** authenticated: nothing signs it.
2. zero or more events, ascending by sequence; a filtered export may skip sequences::

       {"type":"event", <the EVENT_FIELDS>, "prev_hash":"<64 hex>", "hash":"<64 hex>"}

3. zero or more checkpoints, ascending: every checkpoint of the log up to export time,
   whatever the filters::

       {"type":"checkpoint","sequence":N,"hash":"<64 hex>","time":"...",
        "previous_signature":"<base64 or empty>","signature":"<base64>"}

4. exactly one public key, last::

       {"type":"public_key","algorithm":"ed25519","pem":"-----BEGIN PUBLIC KEY-----\\n..."}

Objects may contain no other keys. Key order and whitespace inside a line do not matter
(verification re-serialises canonically), but :func:`export_header_line`,
:func:`export_event_line`, :func:`export_checkpoint_line` and :func:`export_public_key_line`
produce the reference form (canonical JSON, no trailing newline). Blank lines are ignored.

What verification of an export proves
=====================================

* every event's hash is recomputed from its own ``prev_hash`` and content;
* exported events with consecutive sequences link (``prev_hash`` = previous ``hash``);
* every checkpoint's signature verifies and the checkpoints chain by ``previous_signature``;
* where a checkpoint signs an exported event, the hashes are equal;
* for a complete export (``filters == {}``) additionally: no sequence gaps, the first event is
  the genesis event, and no checkpoint signs an event beyond the last exported one.

An event is **anchored** when a contiguous run of exported events links it to a checkpoint; its
content is then covered by a signature. An isolated event in a filtered export, or an event
after the last checkpoint, is only self-consistent: whoever edits it can recompute its hash.

The public key inside the export proves only internal consistency: anyone who rewrites the
whole file can sign it with a key of their own. Authenticity needs the portal's audit public
key obtained independently, passed as ``trusted_public_key_pem`` to :func:`verify_export`
(``--public-key`` on the command line).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "EVENT_FIELDS",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "GENESIS_HASH",
    "ChainResult",
    "CheckpointResult",
    "ExportResult",
    "canonical_json",
    "checkpoint_payload",
    "checkpoint_sign",
    "checkpoint_verify",
    "event_canonical_bytes",
    "event_hash",
    "export_checkpoint_line",
    "export_event_line",
    "export_header_line",
    "export_public_key_line",
    "format_time",
    "public_key_from_pem",
    "public_key_to_pem",
    "verify_chain",
    "verify_checkpoints",
    "verify_export",
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

#: ``format`` and ``version`` of the export header line.
EXPORT_FORMAT = "kmsportal-audit-export"
EXPORT_VERSION = 1

_CHECKPOINT_FIELDS = ("sequence", "hash", "time", "previous_signature", "signature")
_EVENT_LINE_KEYS = frozenset({"type", *EVENT_FIELDS, "prev_hash", "hash"})
_CHECKPOINT_LINE_KEYS = frozenset({"type", *_CHECKPOINT_FIELDS})
_HEADER_LINE_KEYS = frozenset({"type", "format", "version", "exported_at", "filters"})
_PUBLIC_KEY_LINE_KEYS = frozenset({"type", "algorithm", "pem"})


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


# --------------------------------------------------------------------------- checkpoints


def checkpoint_payload(
    *, sequence: int, event_hash: str, time: str, previous_signature: str
) -> bytes:
    """The bytes a checkpoint signature covers: canonical JSON of its four signed fields."""
    return canonical_json(
        {
            "sequence": sequence,
            "hash": event_hash,
            "time": time,
            "previous_signature": previous_signature,
        }
    )


def checkpoint_sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    """Sign a checkpoint payload with the audit key; returns the signature as base64."""
    return base64.b64encode(private_key.sign(payload)).decode("ascii")


def checkpoint_verify(public_key: Ed25519PublicKey, payload: bytes, signature_b64: str) -> bool:
    """True iff ``signature_b64`` is the canonical base64 of a valid signature over ``payload``.

    Non-canonical base64 (other padding bits, whitespace) is refused: checkpoints chain by
    comparing signature *strings*, so one signature must have exactly one spelling.
    """
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if base64.b64encode(signature).decode("ascii") != signature_b64:
        return False
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def public_key_to_pem(pk: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of an Ed25519 public key."""
    return pk.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_key_from_pem(text: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM; ``ValueError`` if it is anything else."""
    try:
        key = serialization.load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Outcome of :func:`verify_chain`.

    ``events_verified`` counts events checked before the first broken link; ``first_sequence``
    is the sequence of the first event seen (even if it is the broken one); ``last_sequence``
    and ``last_hash`` describe the last *verified* event, so a caller can resume from there.
    ``broken_at`` is the sequence of the offending event and ``problem`` says what differs.
    """

    ok: bool
    events_verified: int
    first_sequence: int | None
    last_sequence: int | None
    last_hash: str | None
    broken_at: int | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """Outcome of :func:`verify_checkpoints`; ``broken_at`` is the offending checkpoint's sequence."""

    ok: bool
    checkpoints_verified: int
    broken_at: int | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Outcome of :func:`verify_export`; ``line_number`` (1-based) locates the problem."""

    ok: bool
    events_verified: int
    checkpoints_verified: int
    problem: str | None
    line_number: int | None


# --------------------------------------------------------------------------- chain


def verify_chain(
    events: Iterable[Mapping[str, Any]], *, expected_prev_hash: str | None = None
) -> ChainResult:
    """Walk events in order and stop at the first broken link.

    Each event has the :data:`EVENT_FIELDS` plus ``prev_hash`` and ``hash``. For every event,
    in this order: its sequence is the previous one + 1 (the first event's ``prev_hash`` must
    equal ``expected_prev_hash`` when given, e.g. :data:`GENESIS_HASH` or the ``last_hash`` of
    the previous batch); its ``prev_hash`` equals the previous event's ``hash``; the hash
    recomputed from ``prev_hash`` and content equals the stored ``hash``.

    Streams: constant memory, one canonical serialisation and one SHA-256 per event.
    """
    if expected_prev_hash is not None and not _is_hash(expected_prev_hash):
        raise ValueError(
            f"expected_prev_hash must be 64 lowercase hex digits: {expected_prev_hash!r}"
        )
    sha256 = hashlib.sha256
    text_of = _event_text
    link_fields = _get_link_fields
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_hash: str | None = None
    last_digest = b""

    def broken(at: int | None, problem: str) -> ChainResult:
        # Verified events are contiguous, so their count follows from the sequences.
        verified = 0 if last_sequence is None else last_sequence - first_sequence + 1
        return ChainResult(False, verified, first_sequence, last_sequence, last_hash, at, problem)

    for event in events:
        try:
            sequence, prev_hash, stored = link_fields(event)
        except KeyError as exc:
            return broken(None, f"{_after(last_sequence)}: missing field {exc.args[0]!r}")
        if last_sequence is None:
            if type(sequence) is not int:
                return broken(None, f"first event: sequence is not an integer: {sequence!r}")
            first_sequence = sequence
            if expected_prev_hash is not None and prev_hash != expected_prev_hash:
                return broken(
                    sequence,
                    f"event {sequence}: prev_hash {_short(prev_hash)} does not match the expected "
                    f"{expected_prev_hash} (events missing before it, or it was altered)",
                )
            if not _is_hash(prev_hash):
                return broken(
                    sequence, f"event {sequence}: prev_hash is not 64 lowercase hex: {prev_hash!r}"
                )
            prev_digest = bytes.fromhex(prev_hash)
        else:
            # No separate type check here: a non-int equal to last + 1 (5.0, True) serialises
            # differently from the int the server hashed, so the hash check below catches it.
            if sequence != last_sequence + 1:
                return broken(
                    sequence if type(sequence) is int else None,
                    _sequence_problem(last_sequence, sequence),
                )
            if prev_hash != last_hash:
                return broken(
                    sequence,
                    f"event {sequence}: prev_hash does not match hash of event {last_sequence} "
                    "(row inserted, deleted or reordered)",
                )
            # Equal to the previous stored hash, which equals its recomputed digest: reuse it.
            prev_digest = last_digest
        try:
            canonical = text_of(event).encode()
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            return broken(sequence, f"event {sequence}: cannot be serialised: {_message(exc)}")
        digest = sha256(prev_digest + canonical)
        computed = digest.hexdigest()
        if computed != stored:
            return broken(
                sequence,
                f"event {sequence}: stored hash {_short(stored)} does not match recomputed "
                f"{computed} (content altered)",
            )
        last_digest = digest.digest()
        last_sequence = sequence
        last_hash = computed
    verified = 0 if last_sequence is None else last_sequence - first_sequence + 1
    return ChainResult(True, verified, first_sequence, last_sequence, last_hash, None, None)


def _after(sequence: int | None) -> str:
    return "first event" if sequence is None else f"event after {sequence}"


def _message(exc: BaseException) -> str:
    # KeyError's str() adds quotes around its message; use the message itself.
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _sequence_problem(previous: int, sequence: object) -> str:
    if type(sequence) is not int:
        return f"event after {previous}: sequence is not an integer: {sequence!r}"
    if sequence <= previous:
        return (
            f"event {sequence} follows event {previous}: sequence not increasing "
            "(rows reordered or duplicated)"
        )
    if sequence == previous + 2:
        missing = f"event {previous + 1} deleted?"
    else:
        missing = f"events {previous + 1}..{sequence - 1} deleted?"
    return f"event {sequence} follows event {previous}: sequence gap ({missing})"


# --------------------------------------------------------------------------- checkpoint chain


def verify_checkpoints(
    checkpoints: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey,
    *,
    event_hashes: Mapping[int, str] | Callable[[int], str | None],
    expected_first_previous_signature: str | None = None,
    last_event_sequence: int | None = None,
) -> CheckpointResult:
    """Verify signed checkpoints (ascending) against the public key and the known event hashes.

    For every checkpoint, in this order: the signature verifies over
    :func:`checkpoint_payload`; its ``previous_signature`` equals the previous checkpoint's
    ``signature`` (for the first one: equals ``expected_first_previous_signature`` when that is
    given, ``""`` for the first checkpoint of the log); its sequence is greater than the
    previous one's; when the caller says the events are complete up to
    ``last_event_sequence``, it does not sign an event beyond it (tail truncated); and when
    ``event_hashes`` knows its sequence (a mapping, or a lookup returning ``None`` when
    unknown), the hashes are equal.
    """
    lookup = event_hashes.get if isinstance(event_hashes, Mapping) else event_hashes
    verified, _index, broken_at, problem = _check_checkpoints(
        checkpoints, public_key, lookup, expected_first_previous_signature, last_event_sequence
    )
    return CheckpointResult(problem is None, verified, broken_at, problem)


def _check_checkpoints(
    checkpoints: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey,
    lookup: Callable[[int], str | None],
    expected_first_previous_signature: str | None,
    last_event_sequence: int | None,
) -> tuple[int, int | None, int | None, str | None]:
    """Core of :func:`verify_checkpoints`: (verified, index of broken one, its sequence, problem)."""
    previous: tuple[int, str] | None = None  # sequence and signature of the last good one
    verified = 0
    for index, checkpoint in enumerate(checkpoints):
        try:
            sequence, hash_, time, previous_signature, signature = (
                checkpoint[field] for field in _CHECKPOINT_FIELDS
            )
        except KeyError as exc:
            return verified, index, None, f"checkpoint #{index + 1}: missing field {exc.args[0]!r}"
        if type(sequence) is not int or not all(
            isinstance(v, str) for v in (hash_, time, previous_signature, signature)
        ):
            return verified, index, None, f"checkpoint #{index + 1}: a field has the wrong type"
        name = f"checkpoint at {sequence}"
        payload = checkpoint_payload(
            sequence=sequence, event_hash=hash_, time=time, previous_signature=previous_signature
        )
        problem = None
        if not checkpoint_verify(public_key, payload, signature):
            problem = f"{name}: signature does not verify with the public key (forged or altered)"
        elif previous is None:
            if expected_first_previous_signature not in (None, previous_signature):
                problem = (
                    f"{name}: previous_signature does not match the expected one "
                    "(earlier checkpoints missing?)"
                )
        elif previous_signature != previous[1]:
            problem = (
                f"{name}: previous_signature does not match the signature of the checkpoint "
                f"at {previous[0]} (checkpoint removed, inserted or reordered)"
            )
        elif sequence <= previous[0]:
            problem = f"{name} follows the checkpoint at {previous[0]}: sequence not increasing"
        if problem is None and last_event_sequence is not None and sequence > last_event_sequence:
            # A validly signed checkpoint proves that event existed: the log lost its tail.
            problem = (
                f"checkpoint signs event {sequence} but the log ends at {last_event_sequence} "
                "(tail truncated)"
            )
        if problem is None:
            known = lookup(sequence)
            if known is not None and known != hash_:
                problem = f"{name} signs hash {hash_} but event {sequence} has hash {known}"
        if problem is not None:
            return verified, index, sequence, problem
        previous = (sequence, signature)
        verified += 1
    return verified, None, None, None


# --------------------------------------------------------------------------- export


def export_header_line(*, exported_at: str, filters: Mapping[str, Any]) -> str:
    """The header line of an export (``filters`` empty for a complete export); no newline."""
    return canonical_json(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": exported_at,
            "filters": dict(filters),
        }
    ).decode("utf-8")


def export_event_line(event: Mapping[str, Any]) -> str:
    """An event line: the :data:`EVENT_FIELDS`, ``prev_hash`` and ``hash``; no newline."""
    line = _event_dict(event)
    line["type"] = "event"
    line["prev_hash"] = event["prev_hash"]
    line["hash"] = event["hash"]
    return canonical_json(line).decode("utf-8")


def export_checkpoint_line(checkpoint: Mapping[str, Any]) -> str:
    """A checkpoint line: sequence, hash, time, previous_signature, signature; no newline."""
    line = {field: checkpoint[field] for field in _CHECKPOINT_FIELDS}
    line["type"] = "checkpoint"
    return canonical_json(line).decode("utf-8")


def export_public_key_line(public_key: Ed25519PublicKey) -> str:
    """The closing line carrying the audit public key as PEM; no newline."""
    return canonical_json(
        {"type": "public_key", "algorithm": "ed25519", "pem": public_key_to_pem(public_key)}
    ).decode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys, while a person reading the line may see the first:
    # a line that reads differently to people and to the verifier is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)


class _Tampered(Exception):
    """Raised inside verify_export to stop at the first problem with its line number."""

    def __init__(self, line_number: int | None, problem: str) -> None:
        super().__init__(problem)
        self.line_number = line_number
        self.problem = problem


def _key_problem(kind: str, obj: Mapping[str, Any], expected: frozenset[str]) -> str | None:
    keys = obj.keys()
    if keys == expected:
        return None
    parts = []
    if missing := sorted(expected - keys):
        parts.append("missing " + ", ".join(missing))
    if extra := sorted(keys - expected):
        parts.append("unexpected " + ", ".join(extra))
    return f"{kind} line: " + "; ".join(parts)


def verify_export(
    lines: Iterable[str], *, trusted_public_key_pem: str | None = None
) -> ExportResult:
    """Verify a JSON Lines export offline (format in the module docstring); stops at the first problem.

    ``lines`` are ``str`` (a text file object works: it is read as a stream). The public key in
    the export proves only that the file is internally consistent; pass the portal's audit
    public key, obtained independently, as ``trusted_public_key_pem`` to prove it comes from
    the portal: it must then equal the key in the file. An invalid ``trusted_public_key_pem``
    raises ``ValueError`` before anything is read.

    Memory: constant per event except 40 bytes (sequence and digest) kept for each exported
    event, because checkpoints come after the events and are compared with them.
    """
    trusted = (
        public_key_from_pem(trusted_public_key_pem) if trusted_public_key_pem is not None else None
    )
    state = _ExportState()
    try:
        state.run(lines, trusted)
    except _Tampered as exc:
        return ExportResult(
            False, state.events_verified, state.checkpoints_verified, exc.problem, exc.line_number
        )
    return ExportResult(True, state.events_verified, state.checkpoints_verified, None, None)


class _ExportState:
    """The streaming verifier behind :func:`verify_export`."""

    def __init__(self) -> None:
        self.events_verified = 0
        self.checkpoints_verified = 0
        # Exported events' sequences and digests, compact (8 + 32 bytes each), for checkpoints.
        self.sequences = array("q")
        self.digests = bytearray()

    def run(self, lines: Iterable[str], trusted: Ed25519PublicKey | None) -> None:
        raw_decode = _DECODER.raw_decode
        sha256 = hashlib.sha256
        text_of = _event_text
        sequences_append = self.sequences.append
        digests = self.digests
        stage = "start"  # start -> events -> checkpoints -> done
        complete = False
        last_sequence: int | None = None
        last_hash: str | None = None
        last_digest = b""
        checkpoints: list[tuple[int, Mapping[str, Any]]] = []
        line_number = 0
        for line_number, line in enumerate(lines, 1):
            try:
                obj, end = raw_decode(line)
                if end != len(line) and not line[end:].isspace():
                    raise ValueError("extra data")
            except (ValueError, RecursionError):
                if not line.strip():
                    continue  # blank line
                obj = self._decode_slowly(line, line_number)
            if type(obj) is not dict:
                raise _Tampered(line_number, "line is not a JSON object")
            kind = obj.get("type")

            if kind == "event":
                if stage != "events":
                    raise _Tampered(line_number, self._misplaced(kind, stage))
                if obj.keys() != _EVENT_LINE_KEYS:
                    raise _Tampered(line_number, _key_problem("event", obj, _EVENT_LINE_KEYS))
                sequence = obj["sequence"]
                prev_hash = obj["prev_hash"]
                if type(sequence) is not int:
                    raise _Tampered(line_number, f"sequence is not an integer: {sequence!r}")
                if last_sequence is not None and sequence == last_sequence + 1:
                    # Consecutive with the previous exported event: must link to it.
                    if prev_hash != last_hash:
                        raise _Tampered(
                            line_number,
                            f"event {sequence}: prev_hash does not match hash of event "
                            f"{last_sequence} (event inserted, deleted or reordered)",
                        )
                    prev_digest = last_digest
                else:
                    if last_sequence is None:
                        if complete and prev_hash != GENESIS_HASH:
                            raise _Tampered(
                                line_number,
                                f"event {sequence}: a complete export must start with the first "
                                "event of the log (prev_hash = genesis); leading events removed?",
                            )
                    elif sequence <= last_sequence:
                        raise _Tampered(
                            line_number,
                            f"event {sequence} follows event {last_sequence}: sequence not "
                            "increasing (lines reordered or duplicated)",
                        )
                    elif complete:
                        raise _Tampered(line_number, _sequence_problem(last_sequence, sequence))
                    if not _is_hash(prev_hash):
                        raise _Tampered(
                            line_number, f"event {sequence}: prev_hash is not 64 lowercase hex"
                        )
                    prev_digest = bytes.fromhex(prev_hash)
                try:
                    canonical = text_of(obj).encode()
                except (KeyError, TypeError, ValueError, RecursionError) as exc:
                    raise _Tampered(
                        line_number, f"event {sequence}: cannot be serialised: {_message(exc)}"
                    ) from None
                digest = sha256(prev_digest + canonical)
                computed = digest.hexdigest()
                if computed != obj["hash"]:
                    raise _Tampered(
                        line_number,
                        f"event {sequence}: stored hash {_short(obj['hash'])} does not match "
                        f"recomputed {computed} (content altered)",
                    )
                last_digest = digest.digest()
                sequences_append(sequence)
                digests += last_digest
                last_sequence = sequence
                last_hash = computed
                self.events_verified += 1

            elif kind == "checkpoint":
                if stage not in ("events", "checkpoints"):
                    raise _Tampered(line_number, self._misplaced(kind, stage))
                if problem := _key_problem("checkpoint", obj, _CHECKPOINT_LINE_KEYS):
                    raise _Tampered(line_number, problem)
                stage = "checkpoints"
                # Checkpoints are few (one per batch of events): buffer them until the key.
                checkpoints.append((line_number, obj))

            elif kind == "header":
                if stage != "start":
                    raise _Tampered(line_number, self._misplaced(kind, stage))
                complete = self._check_header(obj, line_number)
                stage = "events"

            elif kind == "public_key":
                if stage not in ("events", "checkpoints"):
                    raise _Tampered(line_number, self._misplaced(kind, stage))
                public_key = self._public_key(obj, line_number, trusted)
                self._verify_checkpoints(
                    checkpoints, public_key, (last_sequence or 0) if complete else None
                )
                stage = "done"

            elif stage == "start":
                raise _Tampered(line_number, "the first line must be the export header")
            else:
                raise _Tampered(line_number, f"unknown line type {_short(kind)}")

        if stage == "start":
            raise _Tampered(None, "the export is empty: no header line")
        if stage != "done":
            raise _Tampered(
                line_number, "the export ends without its public_key line (file truncated?)"
            )

    @staticmethod
    def _decode_slowly(line: str, line_number: int) -> Any:
        # Surrounding whitespace, or a real error: json.loads-like decoding gives a good message.
        try:
            return _DECODER.decode(line)
        except (ValueError, RecursionError) as exc:
            raise _Tampered(line_number, f"malformed JSON: {exc}") from None

    @staticmethod
    def _misplaced(kind: str, stage: str) -> str:
        if stage == "start":
            return "the first line must be the export header"
        if stage == "done":
            return f"unexpected {kind} line after the public_key line"
        if kind == "header":
            return "a second header line"
        return f"{kind} line after the checkpoint lines (lines reordered?)"

    @staticmethod
    def _check_header(obj: Mapping[str, Any], line_number: int) -> bool:
        if problem := _key_problem("header", obj, _HEADER_LINE_KEYS):
            raise _Tampered(line_number, problem)
        if obj["format"] != EXPORT_FORMAT or obj["version"] != EXPORT_VERSION:
            raise _Tampered(
                line_number,
                f"not a {EXPORT_FORMAT} version {EXPORT_VERSION} file: "
                f"format {obj['format']!r}, version {obj['version']!r}",
            )
        if not isinstance(obj["filters"], dict):
            raise _Tampered(line_number, "header filters must be a JSON object")
        return not obj["filters"]

    @staticmethod
    def _public_key(
        obj: Mapping[str, Any], line_number: int, trusted: Ed25519PublicKey | None
    ) -> Ed25519PublicKey:
        if problem := _key_problem("public_key", obj, _PUBLIC_KEY_LINE_KEYS):
            raise _Tampered(line_number, problem)
        if obj["algorithm"] != "ed25519" or not isinstance(obj["pem"], str):
            raise _Tampered(line_number, f"unsupported public key algorithm {obj['algorithm']!r}")
        try:
            public_key = public_key_from_pem(obj["pem"])
        except ValueError as exc:
            raise _Tampered(line_number, f"public key: {exc}") from None
        if trusted is not None and public_key.public_bytes_raw() != trusted.public_bytes_raw():
            raise _Tampered(
                line_number,
                "the public key in the export is not the trusted public key "
                "(the export was signed by someone else)",
            )
        return public_key

    def _event_hash_at(self, sequence: int) -> str | None:
        i = bisect_left(self.sequences, sequence)
        if i == len(self.sequences) or self.sequences[i] != sequence:
            return None
        return self.digests[32 * i : 32 * i + 32].hex()

    def _verify_checkpoints(
        self,
        checkpoints: list[tuple[int, Mapping[str, Any]]],
        public_key: Ed25519PublicKey,
        last_event_sequence: int | None,
    ) -> None:
        verified, index, _sequence, problem = _check_checkpoints(
            (obj for _, obj in checkpoints),
            public_key,
            self._event_hash_at,
            None,  # the first listed checkpoint may follow ones not in the file
            last_event_sequence,
        )
        self.checkpoints_verified = verified
        if problem is not None:
            assert index is not None
            raise _Tampered(checkpoints[index][0], problem)
