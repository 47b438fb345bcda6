"""Canonical JSON (RFC 8785, JCS) for everything the ledger hashes.

A verifier in any language must reproduce these bytes exactly, so the reference encoder below
follows the RFC literally. orjson produces identical bytes for the common case (no floats, keys
whose UTF-16 order equals their code-point order) at a tenth of the cost, so it is used there.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonicalisable(ValueError):
    """A value that has no RFC 8785 encoding (NaN, infinities, huge integers, non-string keys...)."""


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of a JSON value built from dict, list, str, int, float, bool and None."""
    try:
        if _orjson_agrees(value):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return _reference(value).encode("utf-8")
    except (UnicodeEncodeError, orjson.JSONEncodeError) as exc:
        raise NotCanonicalisable(f"text that is not valid Unicode (lone surrogate?): {exc}") from None


def _orjson_agrees(value: Any) -> bool:
    """True when orjson's sorted output is byte-identical to RFC 8785 for this value."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or _bmp_only(key)):
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False  # floats and anything exotic take the reference path
    return True


def _bmp_only(text: str) -> bool:
    return all(ord(ch) < 0x10000 for ch in text)


def _reference(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise NotCanonicalisable(f"integer {value} is outside the I-JSON safe range +-(2**53-1)")
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_reference(item) for item in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise NotCanonicalisable(f"object key {key!r} is not a string")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_string(k) + ":" + _reference(value[k]) for k in keys) + "}"
    raise NotCanonicalisable(f"{type(value).__name__} is not a JSON value")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    """ECMAScript Number.prototype.toString, as RFC 8785 section 3.2.2.3 requires."""
    if math.isnan(value) or math.isinf(value):
        raise NotCanonicalisable(f"{value} has no JSON representation")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest_digits(abs(value))
    # n is the position of the decimal point relative to the digit string (ECMA-262 7.1.12.1).
    n = exponent + len(digits)
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-tripping decimal digits and exponent: value == int(digits) * 10**exponent."""
    text = repr(value)  # Python's repr is the shortest round-trip representation
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent -= len(frac)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return stripped or "0", exponent
