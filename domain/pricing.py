"""Prices and the cost of one inference, in integer micro-units of a named currency. Never a float.

A price is given per 1,000,000 tokens, in micro-units (USD 2.50 per 1M input tokens = 2_500_000).

Rounding rule (the one the cost property test checks): the cost of an inference is
    (uncached_in * input + cached_in * cached_input + out * output) // 1_000_000
i.e. every component is multiplied exactly, summed, and divided ONCE, rounding down (toward zero,
in the customer's favour). A sum of recorded costs therefore differs from the cost of the summed
tokens by less than one micro-unit per inference, never more, and both are exact integers.

Token conventions (normalised from each provider by the adapters): `tokens_in` counts every prompt
token including cached ones, `tokens_cached` is the part of `tokens_in` read from a prompt cache
(billed at `cached_input`), `tokens_out` counts every generated token including reasoning tokens,
`tokens_reasoning` is the part of `tokens_out` spent reasoning (billed at `output`, like OpenAI and
DeepSeek bill it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MICROS = 1_000_000
PER_TOKENS = 1_000_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class InvalidPrice(ValueError):
    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"price {field}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class Price:
    """Micro-units per 1M tokens; `cached_input` defaults to `input` when a provider has no cache price."""

    input: int
    output: int
    currency: str
    version: str
    cached_input: int | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidPrice(name, value, "a non-negative integer of micro-units per 1M tokens")
        if not isinstance(self.currency, str) or not _CURRENCY.match(self.currency):
            raise InvalidPrice("currency", self.currency, "an ISO 4217 code such as USD")
        if not isinstance(self.version, str) or not self.version:
            raise InvalidPrice("version", self.version, "a non-empty price table version")

    @property
    def cached(self) -> int:
        return self.input if self.cached_input is None else self.cached_input

    def as_dict(self) -> dict[str, object]:
        return {"input_micros_per_m": self.input, "output_micros_per_m": self.output,
                "cached_input_micros_per_m": self.cached_input, "currency": self.currency,
                "price_table_version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Price:
        return cls(int(data["input_micros_per_m"]), int(data["output_micros_per_m"]),  # type: ignore[call-overload]
                   str(data["currency"]), str(data["price_table_version"]),
                   None if data.get("cached_input_micros_per_m") is None else int(data["cached_input_micros_per_m"]))  # type: ignore[call-overload]


def micros(amount: str) -> int:
    """'2.50' (currency units) -> 2_500_000 micro-units, exactly; more than six decimals is refused."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError):
        raise InvalidPrice("amount", amount, "a decimal number such as 2.50") from None
    scaled = value * MICROS
    if not value.is_finite() or value < 0 or scaled != scaled.to_integral_value():
        raise InvalidPrice("amount", amount, "a non-negative decimal with at most 6 fractional digits")
    return int(scaled)


def cost_micros(price: Price, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> int:
    """The module docstring's rule: exact products, one floor division per inference."""
    cached = min(tokens_cached, tokens_in)
    return ((tokens_in - cached) * price.input + cached * price.cached + tokens_out * price.output) // PER_TOKENS
