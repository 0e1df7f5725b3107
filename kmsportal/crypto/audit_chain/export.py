"""Version 1 JSON Lines exports: the reference lines and the streaming offline verifier."""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kmsportal.crypto.audit_chain.canonical import (
    EVENT_FIELDS,
    GENESIS_HASH,
    as_text,
    canonical_json,
    event_dict,
    is_hash,
)
from kmsportal.crypto.audit_chain.chain import exception_message, sequence_problem
from kmsportal.crypto.audit_chain.checkpoints import (
    CHECKPOINT_FIELDS,
    check_checkpoints,
    public_key_from_pem,
    public_key_to_pem,
)
from kmsportal.crypto.audit_chain.lines import EXPORT_FORMAT, LINE_DECODER, header_line
from kmsportal.crypto.canonical import canonical_json_parsed

#: ``format`` and ``version`` of the export header line.
EXPORT_VERSION = 1


_EVENT_LINE_KEYS = frozenset({"type", *EVENT_FIELDS, "prev_hash", "hash"})
_CHECKPOINT_LINE_KEYS = frozenset({"type", *CHECKPOINT_FIELDS})
_HEADER_LINE_KEYS = frozenset({"type", "format", "version", "exported_at", "filters"})
_PUBLIC_KEY_LINE_KEYS = frozenset({"type", "algorithm", "pem"})


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Outcome of :func:`verify_export`; ``line_number`` (1-based) locates the problem."""

    ok: bool
    events_verified: int
    checkpoints_verified: int
    problem: str | None
    line_number: int | None


# --------------------------------------------------------------------------- export


def export_header_line(*, exported_at: str, filters: Mapping[str, Any]) -> str:
    """The header line of an export (``filters`` empty for a complete export); no newline."""
    return header_line(version=EXPORT_VERSION, exported_at=exported_at, filters=filters)


def export_event_line(event: Mapping[str, Any]) -> str:
    """An event line: the :data:`EVENT_FIELDS`, ``prev_hash`` and ``hash``; no newline."""
    line = event_dict(event)
    line["type"] = "event"
    line["prev_hash"] = event["prev_hash"]
    line["hash"] = event["hash"]
    return canonical_json(line).decode("utf-8")


def export_checkpoint_line(checkpoint: Mapping[str, Any]) -> str:
    """A checkpoint line: sequence, hash, time, previous_signature, signature; no newline."""
    line = {field: checkpoint[field] for field in CHECKPOINT_FIELDS}
    line["type"] = "checkpoint"
    return canonical_json(line).decode("utf-8")


def export_public_key_line(public_key: Ed25519PublicKey) -> str:
    """The closing line carrying the audit public key as PEM; no newline."""
    return canonical_json(
        {"type": "public_key", "algorithm": "ed25519", "pem": public_key_to_pem(public_key)}
    ).decode("utf-8")


def _parsed_event_bytes(obj: Mapping[str, Any]) -> bytes:
    # The line came from LINE_DECODER (no floats, no constants), so the type walk can be skipped.
    return canonical_json_parsed(event_dict(obj))


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
        raw_decode = LINE_DECODER.raw_decode
        sha256 = hashlib.sha256
        serialise = _parsed_event_bytes
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
                if problem := _key_problem("event", obj, _EVENT_LINE_KEYS):
                    raise _Tampered(line_number, problem)
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
                        raise _Tampered(line_number, sequence_problem(last_sequence, sequence))
                    if not is_hash(prev_hash):
                        raise _Tampered(
                            line_number, f"event {sequence}: prev_hash is not 64 lowercase hex"
                        )
                    prev_digest = bytes.fromhex(prev_hash)
                try:
                    canonical = serialise(obj)
                except (KeyError, TypeError, ValueError, RecursionError) as exc:
                    raise _Tampered(
                        line_number,
                        f"event {sequence}: cannot be serialised: {exception_message(exc)}",
                    ) from None
                digest = sha256(prev_digest + canonical)
                computed = digest.hexdigest()
                if computed != obj["hash"]:
                    raise _Tampered(
                        line_number,
                        f"event {sequence}: stored hash {as_text(obj['hash'])} does not match "
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
                raise _Tampered(line_number, f"unknown line type {as_text(kind)}")

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
            return LINE_DECODER.decode(line)
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
        verified, index, _sequence, problem = check_checkpoints(
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
