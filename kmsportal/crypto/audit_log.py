"""The audit log as a Merkle tree (version 2): event entries, MACs, signed tree heads, exports.

Pure Python over ``hashlib``, ``hmac`` and ``cryptography``: no Django, so ``python -m
kmsclient audit-verify`` checks an export on a machine that has never seen the portal.

Entries
=======
An event's **entry** is the RFC 8785 canonical JSON (:mod:`kmsportal.crypto.canonical`) of
the object with exactly the :data:`EVENT_FIELDS` (``sequence`` is the event's number, unique
but not gap-free). Its **leaf hash** is RFC 9162's ``SHA-256(0x00 || entry)``; leaf indexes
0, 1, 2, ... are assigned by the sequencer in the order it integrates events.

MAC
===
At insert time every event gets ``HMAC-SHA256(mac_key, entry)``; the 256-bit MAC key is random
and stored sealed under the master keyring. Until an event is covered by a signed tree head,
the MAC is what stops a database writer without the keyring from forging or altering it; the
sequencer integrates only events whose MAC verifies.

Signed tree heads
=================
A head is ``{"log": "kmsportal-audit", "tree_size": n, "root_hash": <64 hex>, "timestamp":
<UTC "…Z">, "key_id": <64 hex>}`` signed (Ed25519) over its canonical JSON; ``key_id`` is the
SHA-256 of the raw 32-byte public key. As JSON (``manage.py audit_head``, the chain page's
download, the last line of an export) it adds ``"type": "tree_head"`` and ``"signature"``
(base64).

Export format (JSON Lines), version 2
=====================================
One JSON object per line, in this order:

1. ``{"type":"header","format":"kmsportal-audit-export","version":2,"exported_at":…,
   "filters":{…}}`` (``filters`` empty for a complete export);
2. events by ascending leaf index: ``{"type":"event", <EVENT_FIELDS>, "leaf_index": i}``; in a
   filtered export each also has ``"inclusion": [<64 hex>, …]``, its RFC 9162 audit path
   against the final head;
3. optionally ``{"type":"consistency","from_size":m,"to_size":n,"proof":[…]}``: proof that
   the tree of ``m`` leaves is a prefix of the exported one (for an auditor's saved head);
4. ``{"type":"public_key","algorithm":"ed25519","key_id":…,"pem":…}`` for the head's key;
5. last, the signed tree head covering every exported event.

Verification (:func:`verify_export`): every event's inclusion (a complete export rebuilds the
whole tree from its events; a filtered one checks each audit path), the head's signature with
a trusted key, and, given an auditor's saved head, that the exported tree extends it. An
export without a head, or whose tail was cut, fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .audit_chain import EVENT_FIELDS, public_key_to_pem
from .audit_chain.canonical import is_hash
from .audit_chain.lines import EXPORT_FORMAT, LINE_DECODER, header_line
from .canonical import canonical_json, canonical_json_parsed
from .merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "LOG_ID",
    "ExportResult",
    "TreeHead",
    "event_entry",
    "event_mac",
    "event_mac_ok",
    "export_consistency_line",
    "export_event_line",
    "export_header_line",
    "export_public_key_line",
    "key_id",
    "public_key_from_text",
    "tree_head_from_json",
    "tree_head_sign",
    "verify_export",
]

LOG_ID = "kmsportal-audit"
EXPORT_VERSION = 2


def event_entry(event: Mapping[str, Any]) -> bytes:
    """The canonical entry of an event (only :data:`EVENT_FIELDS` count)."""
    try:
        fields = {name: event[name] for name in EVENT_FIELDS}
    except KeyError as exc:
        raise KeyError(f"audit event is missing the field {exc.args[0]!r}") from None
    return canonical_json(fields)


def _entry_parsed(event: Mapping[str, Any]) -> bytes:
    return canonical_json_parsed({name: event[name] for name in EVENT_FIELDS})


def event_mac(key: bytes, entry: bytes) -> str:
    """``HMAC-SHA256(key, entry)`` as 64 lowercase hex digits."""
    return hmac.new(key, entry, hashlib.sha256).hexdigest()


def event_mac_ok(key: bytes, entry: bytes, mac: str) -> bool:
    """Constant-time check of an event's MAC."""
    return hmac.compare_digest(event_mac(key, entry), mac or "")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's fingerprint: SHA-256 of its raw 32 bytes, hex."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or base64 of its raw 32 bytes or its DER SubjectPublicKeyInfo."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("utf-8"))
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) == 32:
                return Ed25519PublicKey.from_public_bytes(raw)
            key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error) as exc:
        raise ValueError(f"not an Ed25519 public key (PEM or base64): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head (see the module docstring)."""

    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str

    def payload(self) -> bytes:
        return tree_head_payload(
            tree_size=self.tree_size,
            root_hash=self.root_hash,
            timestamp=self.timestamp,
            key_id=self.key_id,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "type": "tree_head",
            "log": LOG_ID,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def line(self) -> str:
        return canonical_json(self.as_json()).decode("utf-8")

    def verify(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """None if the signature verifies with the key it names, among ``keys``; else why not."""
        key = keys.get(self.key_id)
        if key is None:
            return (
                f"the tree head of size {self.tree_size} is signed by key {self.key_id[:16]}…, "
                "which is not a trusted audit key"
            )
        try:
            signature = base64.b64decode(self.signature, validate=True)
            key.verify(signature, self.payload())
        except (InvalidSignature, binascii.Error, ValueError):
            return f"the signature of the tree head of size {self.tree_size} does not verify"
        return None


def tree_head_payload(*, tree_size: int, root_hash: str, timestamp: str, key_id: str) -> bytes:
    """The bytes a tree head signature covers."""
    return canonical_json(
        {
            "log": LOG_ID,
            "tree_size": tree_size,
            "root_hash": root_hash,
            "timestamp": timestamp,
            "key_id": key_id,
        }
    )


def tree_head_sign(
    private_key: Ed25519PrivateKey, *, tree_size: int, root_hash: str, timestamp: str
) -> TreeHead:
    """Sign a tree head with the audit key."""
    kid = key_id(private_key.public_key())
    payload = tree_head_payload(
        tree_size=tree_size, root_hash=root_hash, timestamp=timestamp, key_id=kid
    )
    signature = base64.b64encode(private_key.sign(payload)).decode("ascii")
    return TreeHead(tree_size, root_hash, timestamp, kid, signature)


_HEAD_KEYS = frozenset(
    {"type", "log", "tree_size", "root_hash", "timestamp", "key_id", "signature"}
)


def tree_head_from_json(obj: Any) -> TreeHead:
    """Parse a tree head object (``"type"`` optional); ``ValueError`` saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("a tree head is a JSON object")
    keys = set(obj) | {"type"}
    if keys != _HEAD_KEYS:
        missing = sorted(_HEAD_KEYS - keys)
        extra = sorted(keys - _HEAD_KEYS)
        raise ValueError(
            f"tree head: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"
        )
    if obj.get("type", "tree_head") != "tree_head" or obj["log"] != LOG_ID:
        raise ValueError(f"not a {LOG_ID} tree head")
    size = obj["tree_size"]
    if type(size) is not int or size < 0:
        raise ValueError("tree head: tree_size must be a non-negative integer")
    if not is_hash(obj["root_hash"]) or not is_hash(obj["key_id"]):
        raise ValueError("tree head: root_hash and key_id must be 64 lowercase hex digits")
    if not isinstance(obj["timestamp"], str) or not isinstance(obj["signature"], str):
        raise ValueError("tree head: timestamp and signature must be strings")
    return TreeHead(size, obj["root_hash"], obj["timestamp"], obj["key_id"], obj["signature"])


# --------------------------------------------------------------------------- export lines


def export_header_line(*, exported_at: str, filters: Mapping[str, Any]) -> str:
    return header_line(version=EXPORT_VERSION, exported_at=exported_at, filters=filters)


def export_event_line(
    event: Mapping[str, Any], *, leaf_index: int, inclusion: Sequence[bytes] | None = None
) -> str:
    line: dict[str, Any] = {name: event[name] for name in EVENT_FIELDS}
    line["type"] = "event"
    line["leaf_index"] = leaf_index
    if inclusion is not None:
        line["inclusion"] = [node.hex() for node in inclusion]
    return canonical_json(line).decode("utf-8")


def export_consistency_line(*, from_size: int, to_size: int, proof: Sequence[bytes]) -> str:
    return canonical_json(
        {
            "type": "consistency",
            "from_size": from_size,
            "to_size": to_size,
            "proof": [node.hex() for node in proof],
        }
    ).decode("utf-8")


def export_public_key_line(public_key: Ed25519PublicKey) -> str:
    return canonical_json(
        {
            "type": "public_key",
            "algorithm": "ed25519",
            "key_id": key_id(public_key),
            "pem": public_key_to_pem(public_key),
        }
    ).decode("utf-8")


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class ExportResult:
    """Outcome of :func:`verify_export`; ``line_number`` (1-based) locates the problem."""

    ok: bool
    events_verified: int
    tree_size: int | None
    problem: str | None
    line_number: int | None
    trusted_head_checked: bool = False
    used_export_key: bool = False


class _Refused(Exception):
    def __init__(self, line_number: int | None, problem: str) -> None:
        super().__init__(problem)
        self.line_number = line_number
        self.problem = problem


_EVENT_KEYS = frozenset({"type", "leaf_index", *EVENT_FIELDS})
_EVENT_KEYS_FILTERED = _EVENT_KEYS | {"inclusion"}


def _hexes(value: Any, what: str, line_number: int) -> list[bytes]:
    if not isinstance(value, list) or not all(is_hash(v) for v in value):
        raise _Refused(line_number, f"{what} must be a list of 64-hex-digit hashes")
    return [bytes.fromhex(v) for v in value]


def verify_export(
    lines: Iterable[str],
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
    trusted_head: TreeHead | None = None,
) -> ExportResult:
    """Verify a version 2 export (see the module docstring); stops at the first problem.

    ``trusted_keys`` (key id -> public key) are the portal's audit keys obtained
    independently; without them the export's own key is used, which proves only internal
    consistency (``used_export_key`` is then true). ``trusted_head`` is a head the auditor
    saved earlier: its signature must verify with a trusted key and the exported tree must
    extend it.
    """
    state = _Export(trusted_keys, trusted_head)
    try:
        state.run(lines)
    except _Refused as exc:
        return ExportResult(
            False,
            state.events,
            state.tree_size,
            exc.problem,
            exc.line_number,
            False,
            state.used_export_key,
        )
    return ExportResult(
        True,
        state.events,
        state.tree_size,
        None,
        None,
        trusted_head is not None,
        state.used_export_key,
    )


class _Export:
    def __init__(
        self, trusted_keys: Mapping[str, Ed25519PublicKey] | None, trusted_head: TreeHead | None
    ) -> None:
        self.trusted_keys = dict(trusted_keys) if trusted_keys else None
        self.trusted_head = trusted_head
        self.events = 0
        self.tree_size: int | None = None
        self.used_export_key = False
        self.frontier = Frontier()
        self.root_at_trusted: bytes | None = None
        # Filtered exports: (line, leaf index, leaf hash, audit path) until the head arrives.
        self.pending: list[tuple[int, int, bytes, list[bytes]]] = []
        self.consistency: dict[int, tuple[int, int, list[bytes]]] = {}
        self.export_keys: dict[str, Ed25519PublicKey] = {}

    def run(self, lines: Iterable[str]) -> None:
        if self.trusted_head is not None and self.trusted_keys is not None:
            problem = self.trusted_head.verify(self.trusted_keys)
            if problem:
                raise _Refused(None, f"trusted head: {problem}")
        stage = "start"
        complete = False
        last_index = -1
        head: TreeHead | None = None
        line_number = 0
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = LINE_DECODER.decode(line)
            except (ValueError, RecursionError) as exc:
                raise _Refused(line_number, f"malformed JSON: {exc}") from None
            if type(obj) is not dict:
                raise _Refused(line_number, "line is not a JSON object")
            kind = obj.get("type")
            if stage == "start":
                if kind != "header":
                    raise _Refused(line_number, "the first line must be the export header")
                complete = self._header(obj, line_number)
                stage = "events"
                continue
            if head is not None:
                raise _Refused(line_number, f"a {kind} line after the signed tree head")
            if kind == "event":
                if stage != "events":
                    raise _Refused(line_number, "an event line after the closing lines")
                last_index = self._event(obj, line_number, complete, last_index)
            elif kind == "consistency":
                stage = "closing"
                self._consistency(obj, line_number)
            elif kind == "public_key":
                stage = "closing"
                self._public_key(obj, line_number)
            elif kind == "tree_head":
                try:
                    head = tree_head_from_json(obj)
                except ValueError as exc:
                    raise _Refused(line_number, str(exc)) from None
                self._head(head, line_number, complete, last_index)
            else:
                raise _Refused(line_number, f"unknown line type {kind!r}")
        if stage == "start":
            raise _Refused(None, "the export is empty: no header line")
        if head is None:
            raise _Refused(
                line_number or None,
                "the export does not end with a signed tree head: nothing in it is signed "
                "(tail cut, or not a complete export file); refusing to call it verified",
            )

    @staticmethod
    def _header(obj: Mapping[str, Any], line_number: int) -> bool:
        if set(obj) != {"type", "format", "version", "exported_at", "filters"}:
            raise _Refused(line_number, "header line: unexpected or missing keys")
        if obj["format"] != EXPORT_FORMAT or obj["version"] != EXPORT_VERSION:
            raise _Refused(
                line_number,
                f"not a {EXPORT_FORMAT} version {EXPORT_VERSION} file "
                f"(format {obj['format']!r}, version {obj['version']!r})",
            )
        if not isinstance(obj["filters"], dict):
            raise _Refused(line_number, "header filters must be a JSON object")
        return not obj["filters"]

    def _event(
        self, obj: Mapping[str, Any], line_number: int, complete: bool, last_index: int
    ) -> int:
        expected = _EVENT_KEYS if complete else _EVENT_KEYS_FILTERED
        if obj.keys() != expected:
            missing = sorted(expected - obj.keys())
            extra = sorted(obj.keys() - expected)
            raise _Refused(
                line_number,
                f"event line: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}",
            )
        index = obj["leaf_index"]
        if type(index) is not int or index < 0:
            raise _Refused(line_number, "leaf_index must be a non-negative integer")
        if complete and index != last_index + 1:
            raise _Refused(
                line_number,
                f"leaf {index} follows leaf {last_index}: a complete export holds every leaf "
                "in order (events deleted, inserted or reordered)",
            )
        if not complete and index <= last_index:
            raise _Refused(line_number, f"leaf {index} follows leaf {last_index}: not ascending")
        try:
            leaf = leaf_hash(_entry_parsed(obj))
        except (TypeError, ValueError) as exc:
            raise _Refused(
                line_number, f"event at leaf {index} cannot be serialised: {exc}"
            ) from None
        if complete:
            self.frontier.append(leaf)
            if self.trusted_head is not None and self.frontier.size == self.trusted_head.tree_size:
                self.root_at_trusted = self.frontier.root()
        else:
            self.pending.append(
                (line_number, index, leaf, _hexes(obj["inclusion"], "inclusion", line_number))
            )
        self.events += 1
        return index

    def _consistency(self, obj: Mapping[str, Any], line_number: int) -> None:
        if set(obj) != {"type", "from_size", "to_size", "proof"}:
            raise _Refused(line_number, "consistency line: unexpected or missing keys")
        first, second = obj["from_size"], obj["to_size"]
        if type(first) is not int or type(second) is not int:
            raise _Refused(line_number, "consistency sizes must be integers")
        self.consistency[first] = (line_number, second, _hexes(obj["proof"], "proof", line_number))

    def _public_key(self, obj: Mapping[str, Any], line_number: int) -> None:
        if set(obj) != {"type", "algorithm", "key_id", "pem"} or obj["algorithm"] != "ed25519":
            raise _Refused(line_number, "public_key line: not an ed25519 key line")
        try:
            key = public_key_from_text(str(obj["pem"]))
        except ValueError as exc:
            raise _Refused(line_number, str(exc)) from None
        if key_id(key) != obj["key_id"]:
            raise _Refused(line_number, "public_key line: key_id does not match the key")
        self.export_keys[obj["key_id"]] = key

    def _head(self, head: TreeHead, line_number: int, complete: bool, last_index: int) -> None:
        self.tree_size = head.tree_size
        keys = self.trusted_keys
        if keys is None:
            keys = self.export_keys
            self.used_export_key = True
        problem = head.verify(keys)
        if problem:
            raise _Refused(line_number, problem)
        root = bytes.fromhex(head.root_hash)
        if complete:
            if self.frontier.size != head.tree_size:
                raise _Refused(
                    line_number,
                    f"the signed head covers {head.tree_size} events but the export holds "
                    f"{self.frontier.size} (events removed or added)",
                )
            if self.frontier.root() != root:
                raise _Refused(
                    line_number,
                    "the events do not hash to the signed root (an event was altered, removed, "
                    "inserted or reordered)",
                )
        else:
            if last_index >= head.tree_size:
                raise _Refused(line_number, f"leaf {last_index} is beyond the signed head")
            for event_line, index, leaf, path in self.pending:
                if not verify_inclusion(index, head.tree_size, leaf, path, root):
                    raise _Refused(
                        event_line,
                        f"the event at leaf {index} is not included in the signed head "
                        "(altered, or its proof is wrong)",
                    )
        self._check_trusted(head, root, line_number, complete)

    def _check_trusted(self, head: TreeHead, root: bytes, line_number: int, complete: bool) -> None:
        trusted = self.trusted_head
        if trusted is None:
            return
        if trusted.tree_size > head.tree_size:
            raise _Refused(
                line_number,
                f"the trusted head (size {trusted.tree_size}) is newer than the export's head "
                f"(size {head.tree_size}): the log was truncated, or this export is older "
                "than the saved head",
            )
        trusted_root = bytes.fromhex(trusted.root_hash)
        if complete and (trusted.tree_size == 0 or self.root_at_trusted is not None):
            ours = self.root_at_trusted if trusted.tree_size else hashlib.sha256(b"").digest()
            if ours != trusted_root:
                raise _Refused(
                    line_number,
                    f"the log was rewritten: its first {trusted.tree_size} events do not hash to "
                    "the trusted head's root (history before the saved head changed)",
                )
            return
        proof = self.consistency.get(trusted.tree_size)
        if proof is None or proof[1] != head.tree_size:
            raise _Refused(
                line_number,
                f"the export has no consistency proof from the trusted head's size "
                f"{trusted.tree_size}: export again with trusted size {trusted.tree_size}",
            )
        if not verify_consistency(trusted.tree_size, head.tree_size, trusted_root, root, proof[2]):
            raise _Refused(
                proof[0],
                f"the log was rewritten: the export's head is not consistent with the trusted "
                f"head of size {trusted.tree_size}",
            )
