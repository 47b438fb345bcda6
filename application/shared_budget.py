"""Rate limits that hold across API processes: each keeps its buckets in memory and tells the others.

A process checks a request against its own buckets (no round trip on the hot path) and every tenth of a
second or so tells the other processes, through a SpendingExchange, what it spent; each debits that from
its own buckets. The buckets of all processes then follow the spending of all of them, late by at most
one exchange: a caller can overshoot a limit by what the other processes allowed it in that moment, not
by N times the limit as with private buckets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from application.ports import SharedBudget
from application.token_bucket import TokenBucket


def bucket_id_secret(signing_key: bytes) -> bytes:
    """The secret of the buckets' opaque ids, derived from a key every API process of a deployment holds (the
    session signing key) and nobody else: whoever can NOTIFY without it can neither read nor forge an id."""
    return hashlib.blake2b(b"nexus rate-limit bucket ids", key=signing_key[:64], digest_size=32).digest()


class SharedBuckets(SharedBudget):
    """Named token buckets, shared: their keys become opaque ids and their spending is counted."""

    def __init__(self, buckets: Mapping[str, TokenBucket | None], secret: bytes) -> None:
        self._buckets = {name: bucket for name, bucket in buckets.items() if bucket is not None}
        for bucket in self._buckets.values():
            bucket.share(secret)

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def spent_here(self) -> dict[str, dict[str, int]]:
        spent = {name: bucket.spent_here() for name, bucket in self._buckets.items()}
        return {name: amounts for name, amounts in spent.items() if amounts}

    def spent_elsewhere(self, spent: Mapping[str, Mapping[str, int]], age_s: float = 0.0) -> None:
        for name, amounts in spent.items():
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.spent_elsewhere(amounts, age_s)
