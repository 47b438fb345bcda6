"""Latency histograms with fixed log-spaced buckets: merging is adding, so any range has percentiles.

Bucket i counts latencies in (BOUNDS_US[i-1], BOUNDS_US[i]] (bucket 0 starts at 0); the last bucket,
index len(BOUNDS_US), counts everything above the top bound. Neighbouring bounds differ by a factor
of 2**(1/4) (about 19 %), which is the resolution of every percentile read from these histograms.
Histograms are stored as bigint[] without trailing zeros; PostgreSQL adds them with
projections.hist_add / projections.hist_sum (migration 0003).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

RATIO = 2 ** 0.25
BASE_US = 100
BOUNDS_US: tuple[int, ...] = tuple(round(BASE_US * RATIO**i) for i in range(92))
"""Upper bounds in microseconds: 100 us ... about 550 s. Changing them changes every stored histogram,
so it means a new version of each projection that stores them (and a rebuild)."""

BUCKETS = len(BOUNDS_US) + 1


def bucket_of(latency_us: int) -> int:
    return bisect_left(BOUNDS_US, latency_us)


def bucket_range(index: int) -> tuple[int, int | None]:
    """(exclusive lower, inclusive upper) bound of a bucket; the overflow bucket has no upper bound."""
    lower = BOUNDS_US[index - 1] if index > 0 else 0
    upper = BOUNDS_US[index] if index < len(BOUNDS_US) else None
    return lower, upper


def trimmed(counts: Sequence[int]) -> list[int]:
    """Counts without trailing zeros: the stored form, so equal histograms are equal arrays."""
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    return list(counts[:end])


_ZEROS = tuple("0," * n for n in range(BUCKETS + 1))


def sparse_literal(counts: dict[int, int]) -> str:
    """The stored (trimmed, dense) form of {bucket index: count} as a PostgreSQL array literal.

    Built from runs of zeros because a bucket row usually has one or two non-empty buckets.
    """
    parts = []
    expected = 0
    for index in sorted(counts):
        parts.append(_ZEROS[index - expected])
        parts.append(f"{counts[index]},")
        expected = index + 1
    return "{" + "".join(parts)[:-1] + "}"


def merge(into: list[int], other: Sequence[int]) -> list[int]:
    if len(other) > len(into):
        into.extend([0] * (len(other) - len(into)))
    for i, n in enumerate(other):
        into[i] += n
    return into


def percentile(counts: Sequence[int], q: float, max_us: int | None = None) -> int | None:
    """Nearest-rank q-quantile, reported as the upper bound of its bucket (capped at the maximum seen).

    The true value lies in the same bucket as the answer: within one bucket's ratio below it.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, n in enumerate(counts):
        seen += n
        if seen >= rank:
            upper = bucket_range(index)[1]
            if upper is None:  # above the top bound: only the maximum says how far
                return max_us if max_us is not None else BOUNDS_US[-1]
            return upper if max_us is None else min(upper, max_us)
    raise AssertionError("unreachable: rank <= total")
