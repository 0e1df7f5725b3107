"""RFC 8785 JSON Canonicalization Scheme (JCS) for the values this project signs and hashes.

The values are JSON objects, arrays, strings, integers, ``true``/``false`` and ``null``; no
floating-point numbers (an audit record or a protocol message never holds one: their decimal
form is where JSON implementations disagree). For that domain JCS is:

* objects with members sorted by key, compared as UTF-16 code units (RFC 8785 §3.2.3);
* no whitespace; strings with only ``"``, ``\\`` and control characters escaped, ``\\b \\f \\n
  \\r \\t`` in short form and the rest as ``\\u00xx`` (lowercase hex), everything else as UTF-8;
* integers in plain decimal. JCS writes numbers as IEEE-754 doubles, which are exact only up
  to 2**53; beyond that this module writes the exact integer (JCS would round it). New audit
  records refuse such integers (audit.services), so they only occur in events written before
  the tree existed.

Python's ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` produces
exactly these bytes except for key order when a key holds a character beyond U+FFFF (Python
sorts by code point, JCS by UTF-16 unit); :func:`canonical_json` uses ``json.JSONEncoder``
(public API only) and re-sorts only in that rare case. ``tests/crypto/test_canonical.py`` checks the
equivalence against an independent JCS implementation (the ``rfc8785`` package) with random
values.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "canonical_json_parsed"]

#: The largest integer an IEEE-754 double holds exactly (RFC 8785 §3.2.2.3, I-JSON).
MAX_SAFE_INTEGER = 2**53 - 1

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
# Encoders built once and reused (public API): json.dumps with non-default options builds a
# new JSONEncoder per call, which costs more than hashing a whole audit event. No circular
# check: canonical_json walks the value first (a cycle ends that walk with RecursionError),
# and canonical_json_parsed takes values fresh from the JSON decoder, which has no cycles.
_OPTIONS: dict[str, Any] = {
    "separators": (",", ":"),
    "ensure_ascii": False,
    "allow_nan": False,
    "check_circular": False,
}
_encode = json.JSONEncoder(sort_keys=True, **_OPTIONS).encode
_encode_in_order = json.JSONEncoder(sort_keys=False, **_OPTIONS).encode
_SCALARS = frozenset({str, int, bool, type(None)})


def _check(value: Any) -> None:
    """Refuse what JCS cannot carry exactly: floats, other types, non-string keys."""
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if type(item) not in _SCALARS:
                _check(item)
        return
    if kind is list or kind is tuple:
        for item in value:
            if type(item) not in _SCALARS:
                _check(item)
        return
    # Subclasses of str and int (enumerations such as Django's TextChoices) serialise as
    # their plain value; float is refused even though it is no int.
    if isinstance(value, str | int):
        return
    raise TypeError(f"{kind.__name__} is not a canonical JSON value")


def _utf16_sorted(value: Any) -> Any:
    """A copy with every object's members in UTF-16 key order (dicts keep insertion order)."""
    if isinstance(value, dict):
        return {
            key: _utf16_sorted(value[key])
            for key in sorted(value, key=lambda k: k.encode("utf-16-be"))
        }
    if isinstance(value, list | tuple):
        return [_utf16_sorted(item) for item in value]
    return value


def _encoded(value: Any) -> bytes:
    text = _encode(value)
    # Code point order and UTF-16 order differ only for characters beyond U+FFFF; when the
    # text holds one (perhaps in a key), sort again by UTF-16 units. Rare: the slow path.
    if not text.isascii() and _ASTRAL.search(text):
        text = _encode_in_order(_utf16_sorted(value))
    return text.encode("utf-8")


def canonical_json(value: Any) -> bytes:
    """The JCS bytes of ``value``. ``TypeError`` for a float or another non-JSON type, or a
    non-string key."""
    _check(value)
    return _encoded(value)


def canonical_json_parsed(value: Any) -> bytes:
    """:func:`canonical_json` for a value just parsed by ``json`` with floats and constants
    refused (keys are then strings, values JSON types): skips the type walk."""
    return _encoded(value)
