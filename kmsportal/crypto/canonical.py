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
sorts by code point, JCS by UTF-16 unit); :func:`canonical_json` uses ``json.dumps`` (public
API only) and re-sorts only in that rare case. ``tests/crypto/test_canonical.py`` checks the
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
_dumps_kwargs: dict[str, Any] = {
    "sort_keys": True,
    "separators": (",", ":"),
    "ensure_ascii": False,
    "allow_nan": False,
}


def _check(value: Any, astral_keys: list[bool]) -> None:
    """Refuse what JCS cannot carry exactly; note whether a key needs UTF-16 ordering."""
    kind = type(value)
    # Subclasses of str and int (enumerations such as Django's TextChoices) serialise as
    # their plain value; float is refused even though it is no int.
    if value is None or isinstance(value, str | int):
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if not astral_keys[0] and _ASTRAL.search(key):
                astral_keys[0] = True
            _check(item, astral_keys)
        return
    if kind is list or kind is tuple:
        for item in value:
            _check(item, astral_keys)
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


def _encode(value: Any, astral: bool) -> bytes:
    if not astral:
        return json.dumps(value, **_dumps_kwargs).encode("utf-8")
    text = json.dumps(_utf16_sorted(value), **{**_dumps_kwargs, "sort_keys": False})
    return text.encode("utf-8")


def canonical_json(value: Any) -> bytes:
    """The JCS bytes of ``value``. ``TypeError`` for a float or another non-JSON type, or a
    non-string key."""
    astral = [False]
    _check(value, astral)
    return _encode(value, astral[0])


def canonical_json_parsed(value: Any) -> bytes:
    """:func:`canonical_json` for a value just parsed by ``json`` with floats and constants
    refused (keys are then strings, values JSON types): skips the type walk, and re-sorts
    only if the text holds a character beyond U+FFFF (which may sit in a key)."""
    text = json.dumps(value, **_dumps_kwargs)
    if text.isascii() or not _ASTRAL.search(text):
        return text.encode("utf-8")
    return canonical_json(value)
