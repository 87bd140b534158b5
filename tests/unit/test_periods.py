from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revenipe.engine.periods import (
    Duration,
    Interval,
    add_months,
    next_boundary,
    parse_duration,
    period_index,
    period_start,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_monthly_anchor_on_31st_clamps_and_comes_back() -> None:
    anchor = utc(2026, 1, 31, 9)
    starts = [period_start(anchor, Interval.MONTH, k) for k in range(4)]
    assert starts == [
        utc(2026, 1, 31, 9),
        utc(2026, 2, 28, 9),
        utc(2026, 3, 31, 9),
        utc(2026, 4, 30, 9),
    ]


def test_leap_year_february() -> None:
    assert add_months(utc(2028, 1, 30), 1) == utc(2028, 2, 29)
    assert period_start(utc(2024, 2, 29), Interval.YEAR, 1) == utc(2025, 2, 28)
    assert period_start(utc(2024, 2, 29), Interval.YEAR, 4) == utc(2028, 2, 29)


def test_periods_are_half_open() -> None:
    anchor = utc(2026, 1, 31)
    boundary = utc(2026, 2, 28)
    assert period_index(anchor, Interval.MONTH, boundary - timedelta(microseconds=1)) == 0
    assert period_index(anchor, Interval.MONTH, boundary) == 1


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(anchor=moments, moment=moments, interval=st.sampled_from(list(Interval)))
def test_period_index_brackets_the_moment(
    anchor: datetime, moment: datetime, interval: Interval
) -> None:
    index = period_index(anchor, interval, moment)
    assert period_start(anchor, interval, index) <= moment
    assert moment < period_start(anchor, interval, index + 1)


@given(
    anchor=moments,
    moment=moments,
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
    interval=st.sampled_from(list(Interval)),
)
def test_next_boundary_ends_the_period_that_holds_the_moment(
    anchor: datetime, moment: datetime, later: timedelta, interval: Interval
) -> None:
    # What settling's shortcut relies on: a later moment is in the same period exactly
    # when it is before the boundary (the answer is cached, so ask twice).
    boundary = next_boundary(anchor, interval, moment)
    assert boundary == period_start(anchor, interval, period_index(anchor, interval, moment) + 1)
    assert next_boundary(anchor, interval, moment) == boundary
    same_period = period_index(anchor, interval, moment + later) == period_index(
        anchor, interval, moment
    )
    assert same_period == (moment + later < boundary)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P30D", Duration(days=30)),
        ("P1M", Duration(months=1)),
        ("P1Y2M", Duration(months=14)),
        ("P2W", Duration(days=14)),
        ("PT12H", Duration(seconds=12 * 3600)),
        ("P1DT1H1M1S", Duration(days=1, seconds=3661)),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(expected.isoformat()) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "30D", "P-1D", "P0D", "P1.5D", "P1DT", "p1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_after_clamps_month() -> None:
    assert Duration(months=1).after(utc(2026, 1, 31)) == utc(2026, 2, 28)
