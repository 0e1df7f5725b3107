"""Hash chain and signed checkpoints of the audit log, shared by the server and offline verifiers.

The version 1 log (events before the Merkle tree of :mod:`kmsportal.crypto.audit_log`). This
package's public surface; the modules are :mod:`.canonical` (event form and hash),
:mod:`.chain`, :mod:`.checkpoints` and :mod:`.export`.

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
event's ``prev_hash`` is :data:`GENESIS_HASH`. Canonical JSON is RFC 8785
(:func:`kmsportal.crypto.canonical.canonical_json`, UTF-8, no floats); events were first
hashed with ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)``, which gives the same bytes for event values (see :mod:`.canonical`).
Because the sequence number is inside the hashed content and every hash covers its
predecessor, editing, inserting, deleting or reordering a row breaks the chain at that row.

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

from kmsportal.crypto.audit_chain.canonical import (
    EVENT_FIELDS,
    GENESIS_HASH,
    canonical_json,
    event_canonical_bytes,
    event_hash,
    format_time,
)
from kmsportal.crypto.audit_chain.chain import ChainResult, verify_chain
from kmsportal.crypto.audit_chain.checkpoints import (
    CheckpointResult,
    checkpoint_payload,
    checkpoint_sign,
    checkpoint_verify,
    public_key_from_pem,
    public_key_to_pem,
    verify_checkpoints,
)
from kmsportal.crypto.audit_chain.export import (
    EXPORT_VERSION,
    ExportResult,
    export_checkpoint_line,
    export_event_line,
    export_header_line,
    export_public_key_line,
    verify_export,
)
from kmsportal.crypto.audit_chain.lines import EXPORT_FORMAT

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
