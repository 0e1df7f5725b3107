"""Verification of the version 1 hash chain: sequence, links and recomputed hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from kmsportal.crypto.audit_chain.canonical import as_text, event_canonical_bytes, is_hash

_get_link_fields = itemgetter("sequence", "prev_hash", "hash")

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
    if expected_prev_hash is not None and not is_hash(expected_prev_hash):
        raise ValueError(
            f"expected_prev_hash must be 64 lowercase hex digits: {expected_prev_hash!r}"
        )
    sha256 = hashlib.sha256
    serialise = event_canonical_bytes
    link_fields = _get_link_fields
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_hash: str | None = None
    last_digest = b""

    def broken(at: int | None, problem: str) -> ChainResult:
        verified = _count(first_sequence, last_sequence)
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
                    f"event {sequence}: prev_hash {as_text(prev_hash)} does not match the expected "
                    f"{expected_prev_hash} (events missing before it, or it was altered)",
                )
            if not is_hash(prev_hash):
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
                    sequence_problem(last_sequence, sequence),
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
            canonical = serialise(event)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            return broken(
                sequence, f"event {sequence}: cannot be serialised: {exception_message(exc)}"
            )
        digest = sha256(prev_digest + canonical)
        computed = digest.hexdigest()
        if computed != stored:
            return broken(
                sequence,
                f"event {sequence}: stored hash {as_text(stored)} does not match recomputed "
                f"{computed} (content altered)",
            )
        last_digest = digest.digest()
        last_sequence = sequence
        last_hash = computed
    verified = _count(first_sequence, last_sequence)
    return ChainResult(True, verified, first_sequence, last_sequence, last_hash, None, None)


def _count(first: int | None, last: int | None) -> int:
    # Verified events are contiguous, so their count follows from the sequences.
    return 0 if first is None or last is None else last - first + 1


def _after(sequence: int | None) -> str:
    return "first event" if sequence is None else f"event after {sequence}"


def exception_message(exc: BaseException) -> str:
    # KeyError's str() adds quotes around its message; use the message itself.
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def sequence_problem(previous: int, sequence: object) -> str:
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
