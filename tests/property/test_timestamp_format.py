"""The ledger hashes its timestamps as text: the formatter must give exactly the documented format."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.entry import format_timestamp

_OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))


@given(st.datetimes(min_value=dt.datetime(1001, 1, 2), max_value=dt.datetime(9998, 12, 30), timezones=_OFFSETS))
def test_any_aware_moment_is_written_as_rfc3339_utc_with_six_fractional_digits(moment):
    # the format DESIGN.md gives, spelled out with strftime, the formatter it replaced
    assert format_timestamp(moment) == moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_whole_second_still_has_its_six_zeros_and_a_naive_moment_is_refused():
    assert format_timestamp(dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)) == "2026-11-27T03:00:00.000000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(dt.datetime(2026, 11, 27))
