"""Latency histograms with fixed log-spaced buckets: merging is adding, so any range has percentiles.

Bucket i counts latencies in (BOUNDS_US[i-1], BOUNDS_US[i]] (bucket 0 starts at 0); the last bucket,
index len(BOUNDS_US), counts everything above the top bound. Neighbouring bounds differ by a factor
of 2**(1/4) (about 19 %), which is the resolution of every percentile read from these histograms.

Stored form (bigint[]): `{}` when empty, else `{first, c_first, ..., c_last}`: the index of the first
non-empty bucket, then the counts from it to the last non-empty one. A bucket row usually holds one
or two occupied buckets, so this is a few elements where the dense form would be ~50 (storage, COPY
and the database's additions all shrink with it), and the form is canonical: equal histograms are
equal arrays. PostgreSQL adds them with projections.hist_add / projections.hist_sum (migration 0003).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence

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


def stored(counts: Mapping[int, int]) -> list[int]:
    """The stored form of {bucket index: count} (counts > 0)."""
    if not counts:
        return []
    first, last = min(counts), max(counts)
    return [first, *(counts.get(i, 0) for i in range(first, last + 1))]


def literal(counts: Mapping[int, int]) -> str:
    """The stored form as a PostgreSQL array literal, for COPY."""
    return "{" + ",".join(map(str, stored(counts))) + "}"


def dense(stored_form: Sequence[int]) -> list[int]:
    """Counts per bucket from index 0 (up to the last non-empty bucket) from the stored form."""
    if not stored_form:
        return []
    return [0] * stored_form[0] + list(stored_form[1:])


def percentile(counts: Sequence[int], q: float, max_us: int | None = None) -> int | None:
    """Nearest-rank q-quantile of dense counts, reported as the upper bound of its bucket (capped at
    the maximum seen). The true value lies in the same bucket: within one bucket's ratio below it.
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
