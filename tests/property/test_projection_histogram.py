"""Latency histograms: percentiles within one bucket of the exact value, merging is adding."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from projections import histogram

latencies = st.lists(st.integers(0, 2 * 10**9), min_size=1, max_size=300)
quantiles = st.sampled_from([0.01, 0.5, 0.9, 0.95, 0.99, 1.0])


def histogram_of(values: list[int]) -> list[int]:
    counts = [0] * histogram.BUCKETS
    for value in values:
        counts[histogram.bucket_of(value)] += 1
    return counts


@given(latencies, quantiles)
def test_a_percentile_lies_in_the_bucket_of_the_exact_nearest_rank_value(values, q):
    exact = sorted(values)[math.ceil(q * len(values)) - 1]
    got = histogram.percentile(histogram_of(values), q, max(values))
    assert histogram.bucket_of(got) == histogram.bucket_of(exact)
    assert exact <= got  # the bucket's upper bound, capped at the maximum seen
    lower, upper = histogram.bucket_range(histogram.bucket_of(exact))
    assert lower <= got and (upper is None or got <= upper)


@given(latencies, latencies)
def test_the_histogram_of_two_samples_is_the_sum_of_their_histograms(a, b):
    merged = histogram.merge(histogram.trimmed(histogram_of(a)), histogram.trimmed(histogram_of(b)))
    assert histogram.trimmed(merged) == histogram.trimmed(histogram_of(a + b))


@given(latencies)
def test_the_sparse_literal_is_the_trimmed_dense_array(values):
    dense = histogram.trimmed(histogram_of(values))
    sparse = {i: n for i, n in enumerate(dense) if n}
    assert histogram.sparse_literal(sparse) == "{" + ",".join(map(str, dense)) + "}"


def test_bounds_are_log_spaced_by_the_stated_ratio():
    ratios = [b / a for a, b in zip(histogram.BOUNDS_US, histogram.BOUNDS_US[1:], strict=False)]
    assert all(abs(r - histogram.RATIO) < 0.01 for r in ratios)
    assert histogram.bucket_of(histogram.BOUNDS_US[3]) == 3 and histogram.bucket_of(histogram.BOUNDS_US[3] + 1) == 4
