"""Latency histograms: percentiles within one bucket of the exact value; the database's addition of
stored histograms is the histogram of the combined samples."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from projections import histogram
from tests.integration import test_projections_support as support

store = support.store  # fixture

latencies = st.lists(st.integers(0, 2 * 10**9), min_size=1, max_size=300)
quantiles = st.sampled_from([0.01, 0.5, 0.9, 0.95, 0.99, 1.0])


def counts_of(values: list[int]) -> Counter[int]:
    return Counter(histogram.bucket_of(v) for v in values)


@given(latencies, quantiles)
def test_a_percentile_lies_in_the_bucket_of_the_exact_nearest_rank_value(values, q):
    exact = sorted(values)[math.ceil(q * len(values)) - 1]
    got = histogram.percentile(histogram.dense(histogram.stored(counts_of(values))), q, max(values))
    assert histogram.bucket_of(got) == histogram.bucket_of(exact)
    assert exact <= got  # the bucket's upper bound, capped at the maximum seen
    lower, upper = histogram.bucket_range(histogram.bucket_of(exact))
    assert lower <= got and (upper is None or got <= upper)


@given(st.lists(st.integers(0, 2 * 10**9), max_size=50))
def test_the_stored_form_starts_at_the_first_occupied_bucket_and_ends_at_the_last(values):
    counts = counts_of(values)
    form = histogram.stored(counts)
    if not values:
        assert form == [] and histogram.literal(counts) == "{}"
        return
    assert form[0] == min(counts) and form[1] > 0 and form[-1] > 0
    assert {i: n for i, n in enumerate(histogram.dense(form)) if n} == dict(counts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 2 * 10**9), max_size=40), st.lists(st.integers(0, 2 * 10**9), max_size=40))
def test_the_database_adds_stored_histograms_like_samples_add_up(store, a, b):
    with store.engine.connect() as conn:
        added, summed = conn.execute(
            text(
                "SELECT projections.hist_add(CAST(:a AS bigint[]), CAST(:b AS bigint[])),"
                " projections.hist_sum(h) FROM unnest(ARRAY[CAST(:a AS text), CAST(:b AS text)]) AS u(t),"
                " LATERAL (SELECT CAST(t AS bigint[]) AS h) AS x"
            ),
            {"a": histogram.literal(counts_of(a)), "b": histogram.literal(counts_of(b))},
        ).one()
    expected = histogram.stored(counts_of(a + b))
    assert list(added) == expected and list(summed) == expected


def test_bounds_are_log_spaced_by_the_stated_ratio():
    ratios = [b / a for a, b in zip(histogram.BOUNDS_US, histogram.BOUNDS_US[1:], strict=False)]
    assert all(abs(r - histogram.RATIO) < 0.01 for r in ratios)
    assert histogram.bucket_of(histogram.BOUNDS_US[3]) == 3 and histogram.bucket_of(histogram.BOUNDS_US[3] + 1) == 4
