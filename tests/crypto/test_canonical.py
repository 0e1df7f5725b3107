"""Canonical JSON is RFC 8785 (checked against the independent `rfc8785` package)."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kmsportal.crypto.canonical import canonical_json, canonical_json_parsed

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_equals_rfc8785(value) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json_parsed(json.loads(json.dumps(value))) == rfc8785.dumps(value)


def test_keys_sort_by_utf16_units() -> None:
    value = {"\U0001f600": 1, "\ufb01": 2, "a": 3}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert list(json.loads(canonical_json(value))) == ["a", "\U0001f600", "\ufb01"]


@pytest.mark.parametrize("bad", [1.5, {"a": float("nan")}, {1: "x"}, object()])
def test_refuses_what_jcs_cannot_carry(bad) -> None:
    with pytest.raises(TypeError):
        canonical_json(bad)
