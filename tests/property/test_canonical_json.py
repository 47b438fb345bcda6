"""Canonical JSON is RFC 8785: the fast path agrees with the literal reference, and values round-trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.canonical import MAX_SAFE_INTEGER, NotCanonicalisable, _reference, canonical_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_fast_path_equals_the_reference_encoder(value):
    assert canonical_json(value) == _reference(value).encode("utf-8")


def _numbers_as_doubles(value):
    """JSON has one number type (IEEE double in I-JSON): 1.0 and 1 are the same value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_numbers_as_doubles(v) for v in value]
    return {k: _numbers_as_doubles(v) for k, v in value.items()}


@given(json_values)
def test_canonical_bytes_parse_back_to_the_same_value(value):
    parsed = json.loads(canonical_json(value), parse_int=float)
    assert _numbers_as_doubles(parsed) == _numbers_as_doubles(value)


@given(st.dictionaries(st.text(), st.integers(0, 10), max_size=8))
def test_keys_are_sorted_by_utf16_code_units(obj):
    keys = list(json.loads(canonical_json(obj)))
    assert keys == sorted(obj, key=lambda k: k.encode("utf-16-be"))


@pytest.mark.parametrize(
    "number, text",  # RFC 8785 section 3.2.2.3 and appendix B examples
    [(0.0, "0"), (-0.0, "0"), (1.0, "1"), (4.5, "4.5"), (0.002, "0.002"), (1e-27, "1e-27"), (1e30, "1e+30"),
     (1e21, "1e+21"), (1e20, "100000000000000000000"), (333333333.3333333, "333333333.3333333"),
     (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"), (-1e-7, "-1e-7"),
     (0.000001, "0.000001"), (123456789012345680000.0, "123456789012345680000")],
)
def test_numbers_use_the_ecmascript_format(number, text):
    assert canonical_json(number).decode() == text


def test_rfc8785_string_escapes():
    assert canonical_json("\u20ac$\u000f\nA'B\"\\\\\"/").decode() == '"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53, {1: "x"}, b"bytes", "\ud800"])
def test_values_without_a_canonical_form_are_refused(bad):
    with pytest.raises(NotCanonicalisable):
        canonical_json(bad)
