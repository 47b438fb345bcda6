"""Scalars beyond GraphQL's own: Python types here, their GraphQL definitions in SCALARS (the schema's
scalar_map)."""

from __future__ import annotations

from typing import NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition


def _whole_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Long: expected a whole number, got {value!r}")
    return value


# GraphQL's Int is 32-bit: USD 2,147.48 in micro-units, 2.1 billion tokens, a 36-minute stream in
# microseconds, or a ledger of 2.1 billion entries would make a query fail. Long is a JSON number,
# exact in JavaScript up to 2**53 - 1 (USD 9 billion in micro-units).
Long = NewType("Long", int)

SCALARS: dict[object, ScalarDefinition] = {
    Long: strawberry.scalar(
        name="Long",
        description="A whole number beyond GraphQL's 32-bit Int (a JSON number, exact up to 2^53 - 1): costs in"
                    " micro-units, token counts, microseconds, ledger positions and sizes",
        serialize=int,
        parse_value=_whole_number,
    ),
}
