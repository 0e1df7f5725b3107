"""The binary framing of the operations session (pure, no Django).

The JSON envelope (`kmsportal.crypto.session`) carries a batch as base64 inside JSON inside
base64 inside JSON: a batch of 1,000 items of 1 KiB goes through ~1 MiB of base64 four times
each way, and base64 of 1 MiB alone costs as much as the 1,000 encryptions it carries. This
framing carries the same request and answer, sealed the same way, as bytes: the items' data
(plaintexts, messages, ciphertext tokens) are length-prefixed fields next to a small JSON
header, never base64 and never inside a JSON string.

HTTP body (``Content-Type: application/vnd.kmsportal.sealed``)
--------------------------------------------------------------
Request::

    version (1 byte, 0x01) || session id (16 bytes) || counter (uint64 BE)
    || nonce (12 bytes) || ciphertext (AES-256-GCM with K_c2s, tag included, >= 16 bytes)

    AAD = LABEL || "|binary-request|" || version || F(session id) || F(operation)
          || uint64(counter)

Answer (the HTTP status mirrors the inner status, as for JSON)::

    version (1 byte, 0x01) || nonce (12 bytes) || ciphertext (AES-256-GCM with K_s2c)

    AAD = LABEL || "|binary-response|" || version || F(session id) || F(operation)
          || uint64(counter) || F(request nonce)

``F(x) = uint64(len(x)) || x`` and LABEL as in `kmsportal.crypto.session`. The JSON
envelope's AADs start ``LABEL || "|request|"`` / ``"|response|"``: the two framings never
share an AAD, so a JSON envelope's ciphertext re-framed as binary (or the reverse) does not
open. Counters are the session's one counter, shared by both framings (replays are refused
whichever framing carried the first use).

Sealed plaintext (both directions)::

    uint32 BE header length || header (UTF-8 JSON object)
    || uint32 BE field count N || N x uint32 BE field length || the N fields' bytes, in order

A field length of 0xFFFFFFFF means the member is absent (no bytes). The lengths come first so
that both sides cut or join the fields in one pass instead of one parsing step per field.

Request header: ``{"key", "options", "items": [...]}`` exactly as the JSON body, except that
each item's binary members (`REQUEST_FIELDS` for the operation, in that order) are not in
the item but in the fields: one field per item and member, item after item. ``ping`` has
the header ``{}`` and no field. Answer header: ``{"status": int, "body": ...}`` with the
results' binary members (`RESPONSE_FIELDS`) moved to fields the same way; an item's error
has all its fields absent; a refusal (a problem document) has no field. Token and PEM
members travel as their ASCII text.

Strict parsing: the header length and the table must fit in what is left; the header must
be a JSON object; 1 to `MAX_ITEMS` items, each an object not also carrying a member of the
fields; N is exactly items x members; the fields' lengths add up to exactly the bytes left
(none missing, none following). Anything else is ``malformed_request`` (``bad_batch`` for the
item count) before a single item is used.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsportal.crypto.protocol.encoding import ProtocolError
from kmsportal.crypto.session import (
    GCM_NONCE_BYTES,
    LABEL,
    MAX_COUNTER,
    SESSION_ID_BYTES,
    Envelope,
    SessionKeys,
)

MEDIA_TYPE = "application/vnd.kmsportal.sealed"
FRAME_VERSION = 1
MAX_ITEMS = 1000
ABSENT = 0xFFFFFFFF
_TAG_BYTES = 16
_REQUEST_HEAD = struct.Struct(">B16sQ12s")  # version, session id, counter, nonce: 37 bytes
_RESPONSE_HEAD = struct.Struct(">B12s")  # version, nonce: 13 bytes
_LENGTH = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_VERSION = bytes([FRAME_VERSION])

#: The item members an operation's request carries as fields, in field order.
REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "encrypt": ("plaintext",),
    "decrypt": ("ciphertext",),
    "reencrypt": ("ciphertext",),
    "generate-data-key": (),
    "mac": ("message",),
    "mac-verify": ("message", "mac"),
    "sign": ("message",),
    "verify": ("message", "signature"),
    "public-key": (),
    "ping": (),
}
#: The result members an operation's answer carries as fields, in field order.
RESPONSE_FIELDS: dict[str, tuple[str, ...]] = {
    "encrypt": ("ciphertext",),
    "decrypt": ("plaintext",),
    "reencrypt": ("ciphertext",),
    "generate-data-key": ("ciphertext", "plaintext"),
    "mac": ("mac",),
    "mac-verify": (),
    "sign": ("signature",),
    "verify": (),
    "public-key": ("public_key",),
    "ping": (),
}
#: Members that are text (tokens, PEM): ASCII on the wire, str in the item.
TEXT_MEMBERS = frozenset({"ciphertext", "mac", "signature", "public_key"})


def _framed(*parts: bytes) -> bytes:
    return b"".join(_U64.pack(len(part)) + part for part in parts)


def _request_aad(session_id: bytes, operation: str, counter: int) -> bytes:
    return (
        LABEL
        + b"|binary-request|"
        + _VERSION
        + _framed(session_id, operation.encode())
        + _U64.pack(counter)
    )


def _response_aad(session_id: bytes, operation: str, counter: int, request_nonce: bytes) -> bytes:
    return (
        LABEL
        + b"|binary-response|"
        + _VERSION
        + _framed(session_id, operation.encode())
        + _U64.pack(counter)
        + _framed(request_nonce)
    )


def _fields_of(operation: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    try:
        return table[operation]
    except KeyError:
        raise ProtocolError("unknown_operation", f"no operation {operation!r}") from None


# --- the plaintext: header and fields ---------------------------------------------------------


def _as_bytes(value: object, member: str) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        # UTF-8, not ASCII: a token that is not ASCII is still sent, and refused per item
        # by the server as the JSON envelope's would be.
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{member} must be bytes, not {type(value).__name__}")


def _pack(
    header: dict[str, Any], rows: Sequence[dict[str, Any]], members: tuple[str, ...]
) -> bytes:
    """Header || field table || data, taking each row's `members` out of it (the rows are
    changed; the header is encoded after, so they are not in it)."""
    values: list[Any]
    if len(members) == 1:
        member = members[0]
        values = [row.pop(member, None) for row in rows]
        data = [
            value.encode() if type(value) is str else _as_bytes(value, member)
            for value in values
            if value is not None
        ]
    else:
        values, data = [], []
        for row in rows:
            for member in members:
                value = row.pop(member, None)
                values.append(value)
                if value is not None:
                    data.append(_as_bytes(value, member))
    if len(data) == len(values):
        table = [len(value) for value in data]
    else:
        lengths = iter([len(value) for value in data])
        table = [ABSENT if value is None else next(lengths) for value in values]
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join(
        (
            _LENGTH.pack(len(encoded)),
            encoded,
            _LENGTH.pack(len(table)),
            struct.pack(f">{len(table)}I", *table),
            *data,
        )
    )


def _unpack_header(plain: bytes, code: str) -> tuple[dict[str, Any], int]:
    """The JSON header and the offset of the field table."""
    if len(plain) < _LENGTH.size:
        raise ProtocolError(code, "the frame is truncated: no header length")
    (length,) = _LENGTH.unpack_from(plain)
    end = _LENGTH.size + length
    if end > len(plain):
        raise ProtocolError(code, "the header length points past the end of the frame")
    try:
        header = json.loads(plain[_LENGTH.size : end].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(code, "the frame header is not JSON") from None
    if type(header) is not dict:
        raise ProtocolError(code, "the frame header must be a JSON object")
    checked: dict[str, Any] = header
    return checked, end


def _unpack_fields(
    plain: bytes, offset: int, rows: list[Any], members: tuple[str, ...], code: str
) -> None:
    """Put the fields (table at `offset`, then the data) into `rows`, one per row and member.
    The table must have exactly that many entries and the data end exactly at the end of
    `plain`; if not, ProtocolError, and the caller discards `rows` (its own parse)."""
    size = len(plain)
    if offset + 4 > size:
        raise ProtocolError(code, "the frame is truncated: no field count")
    (count,) = _LENGTH.unpack_from(plain, offset)
    offset += 4
    if count != len(rows) * len(members):
        raise ProtocolError(
            code, f"the frame has {count} fields; {len(rows)} items of this operation have "
            f"{len(rows) * len(members)}"
        )  # fmt: skip
    if offset + 4 * count > size:
        raise ProtocolError(code, "the frame is truncated: the field table is cut short")
    lengths = struct.unpack_from(f">{count}I", plain, offset)
    offset += 4 * count
    absent = lengths.count(ABSENT)
    total = sum(lengths) - absent * ABSENT
    if offset + total > size:
        raise ProtocolError(code, "a field length points past the end of the frame")
    if offset + total < size:
        raise ProtocolError(code, "bytes follow the last field of the frame")
    if not count:
        return
    for row in rows:
        for member in members:
            if member in row:
                raise ProtocolError(code, f"{member} travels in a field, not in the header")
    ends = list(accumulate([0 if n == ABSENT else n for n in lengths], initial=offset))
    values = [
        None if n == ABSENT else plain[start:end]
        for n, start, end in zip(lengths, ends, ends[1:], strict=False)
    ]
    if len(members) == 1:
        member = members[0]
        text = member in TEXT_MEMBERS
        for row, value in zip(rows, values, strict=True):
            if value is not None:
                row[member] = _text(value) if text else value
        return
    index = 0
    for row in rows:
        for member in members:
            value = values[index]
            index += 1
            if value is not None:
                row[member] = _text(value) if member in TEXT_MEMBERS else value


def _text(value: bytes) -> str | bytes:
    """ASCII text as str; anything else stays bytes (the item is then refused as the JSON
    path refuses a token that is not a string)."""
    return value.decode("ascii") if value.isascii() else value


# --- client side ----------------------------------------------------------------------------------


def seal_request(
    keys: SessionKeys, operation: str, counter: int, body: dict[str, Any]
) -> tuple[bytes, bytes]:
    """Client: the binary frame of `body` (the JSON body's shape; each item's members of
    `REQUEST_FIELDS` as bytes, or str for tokens; the item dicts are not changed). Returns
    the HTTP body and the nonce to open the answer with."""
    members = _fields_of(operation, REQUEST_FIELDS)
    header = dict(body)
    if "items" in header:
        header["items"] = [dict(item) for item in header["items"]]
    plain = _pack(header, header.get("items", ()), members)
    nonce = os.urandom(GCM_NONCE_BYTES)
    sealed = AESGCM(keys.client_to_server).encrypt(
        nonce, plain, _request_aad(keys.session_id, operation, counter)
    )
    head = _REQUEST_HEAD.pack(FRAME_VERSION, keys.session_id, counter, nonce)
    return head + sealed, nonce


def open_response(
    keys: SessionKeys, operation: str, counter: int, request_nonce: bytes, body: bytes
) -> tuple[int, Any]:
    """Client: (status, body) of a binary answer to our request with `counter`."""
    code = "malformed_response"
    if len(body) < _RESPONSE_HEAD.size + _TAG_BYTES or body[0] != FRAME_VERSION:
        raise ProtocolError(code, "expected a binary sealed answer")
    _version, nonce = _RESPONSE_HEAD.unpack_from(body)
    try:
        plain = AESGCM(keys.server_to_client).decrypt(
            nonce,
            body[_RESPONSE_HEAD.size :],
            _response_aad(keys.session_id, operation, counter, request_nonce),
        )
    except InvalidTag:
        raise ProtocolError(
            "bad_envelope", "the answer does not open: altered, or not the answer to our request"
        ) from None
    header, offset = _unpack_header(plain, code)
    status, answer = header.get("status"), header.get("body")
    if type(status) is not int or set(header) != {"status", "body"}:
        raise ProtocolError(code, 'the answer header must be {"status", "body"}')
    results = answer.get("results") if isinstance(answer, dict) else None
    rows = results if status == 200 and isinstance(results, list) else []
    if not all(type(row) is dict for row in rows):
        raise ProtocolError(code, "each result must be an object")
    members = _fields_of(operation, RESPONSE_FIELDS) if rows else ()
    _unpack_fields(plain, offset, rows, members, code)
    return status, answer


# --- server side ----------------------------------------------------------------------------------


def parse_request(body: bytes) -> Envelope:
    """Server: the frame's fixed header, checked (``malformed_request``); not yet opened."""
    code = "malformed_request"
    if len(body) < _REQUEST_HEAD.size + _TAG_BYTES:
        raise ProtocolError(code, "the sealed frame is truncated")
    version, session_id, counter, nonce = _REQUEST_HEAD.unpack_from(body)
    if version != FRAME_VERSION:
        raise ProtocolError(code, f"frame version {version} is not supported (expected 1)")
    if not 1 <= counter <= MAX_COUNTER:
        raise ProtocolError(code, "counter must be a positive integer")
    return Envelope(session_id, counter, nonce, body[_REQUEST_HEAD.size :])


def open_request(keys: SessionKeys, operation: str, envelope: Envelope) -> dict[str, Any]:
    """Server: decrypt a frame and rebuild the JSON body's shape (items with their fields as
    bytes, tokens as str). ``bad_envelope`` if it does not open (altered, another session's
    key, another operation or counter, or a JSON envelope's ciphertext); ``malformed_request``
    or ``bad_batch`` if what opens is not a well-formed batch (nothing is used then)."""
    members = _fields_of(operation, REQUEST_FIELDS)
    if len(envelope.session_id) != SESSION_ID_BYTES or len(envelope.nonce) != GCM_NONCE_BYTES:
        raise ProtocolError("malformed_request", "session or nonce has the wrong length")
    try:
        plain = AESGCM(keys.client_to_server).decrypt(
            envelope.nonce,
            envelope.ciphertext,
            _request_aad(keys.session_id, operation, envelope.counter),
        )
    except InvalidTag:
        raise ProtocolError(
            "bad_envelope", "the request does not open under this session (altered or misrouted)"
        ) from None
    code = "malformed_request"
    header, offset = _unpack_header(plain, code)
    if operation == "ping":
        if header:
            raise ProtocolError(code, "a ping carries the header {}")
        _unpack_fields(plain, offset, [], (), code)
        return header
    if set(header) - {"key", "items", "options"} or "items" not in header:
        raise ProtocolError(code, 'expected the header {"key", "items", "options"}')
    items = header["items"]
    if type(items) is not list or not 1 <= len(items) <= MAX_ITEMS:
        raise ProtocolError("bad_batch", f"items must be a list of 1 to {MAX_ITEMS} entries")
    if not all(type(item) is dict for item in items):
        raise ProtocolError(code, "each item of a binary frame must be an object")
    _unpack_fields(plain, offset, items, members, code)
    return header


def seal_response(
    keys: SessionKeys, operation: str, envelope: Envelope, status: int, body: Any
) -> bytes:
    """Server: the binary answer to `envelope` (the results' field members are taken out of
    `body`'s result dicts)."""
    results = body.get("results") if status == 200 and isinstance(body, dict) else None
    rows = results if isinstance(results, list) else []
    members = RESPONSE_FIELDS.get(operation, ()) if rows else ()
    plain = _pack({"status": status, "body": body}, rows, members)
    nonce = os.urandom(GCM_NONCE_BYTES)
    sealed = AESGCM(keys.server_to_client).encrypt(
        nonce, plain, _response_aad(keys.session_id, operation, envelope.counter, envelope.nonce)
    )
    return _VERSION + nonce + sealed
