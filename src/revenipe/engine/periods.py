"""Time arithmetic: half-open periods `[start, end)` in UTC, anchors, durations.

Period k of an anchored interval starts at ``anchor + k * interval``, always computed
from the anchor (never from the previous period), so a monthly anchor on the 31st falls
on the 28th/29th/30th in shorter months and comes back to the 31st afterwards.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from revenipe.engine.errors import ErrorCode, RevenipeError


class Interval(StrEnum):
    """A billing or reset period's length. Days and weeks are fixed durations; months
    and years are calendar steps from an anchor, clamped to the month's last day."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


_FIXED = {Interval.DAY: timedelta(days=1), Interval.WEEK: timedelta(weeks=1)}


def require_utc(moment: datetime, *, field: str = "time") -> datetime:
    """Timezone-aware datetimes only; returned converted to UTC."""
    if not isinstance(moment, datetime):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be a datetime, got {moment!r}", field=field
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be timezone-aware", field=field
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, f"{field} is out of the supported range", field=field
        ) from None


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus whole months, the day clamped to the target month's last day."""
    total = moment.year * 12 + (moment.month - 1) + months
    year, month0 = divmod(total, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last_day))


def period_start(anchor: datetime, interval: Interval, index: int) -> datetime:
    """Start of period number `index` (0 is the one starting at `anchor`)."""
    if interval in _FIXED:
        return anchor + _FIXED[interval] * index
    months = index * (12 if interval is Interval.YEAR else 1)
    return add_months(anchor, months)


def period_index(anchor: datetime, interval: Interval, moment: datetime) -> int:
    """The index of the period that contains `moment` (negative before the anchor)."""
    if interval in _FIXED:
        return (moment - anchor) // _FIXED[interval]
    step = 12 if interval is Interval.YEAR else 1
    months = (moment.year - anchor.year) * 12 + (moment.month - anchor.month)
    index = months // step
    # The estimate is exact or one too high (day/time of month not reached yet).
    while period_start(anchor, interval, index) > moment:
        index -= 1
    while period_start(anchor, interval, index + 1) <= moment:
        index += 1
    return index


@functools.lru_cache(maxsize=4096)
def next_boundary(anchor: datetime, interval: Interval, moment: datetime) -> datetime:
    """The first period boundary after `moment`: the end of the period that holds it.

    Cached: settling a resetting grant asks it for the grant's period start on every
    track, and that stays the same for a whole period; the calendar arithmetic of a
    monthly period costs about 10 us a call, the cache 0.3."""
    return period_start(anchor, interval, period_index(anchor, interval, moment) + 1)


@dataclass(frozen=True, slots=True)
class Duration:
    """An ISO-8601 duration (``P30D``, ``P1M``, ``PT12H``, ``P1Y2M3DT4H5M6S``, ``P2W``)."""

    months: int = 0
    days: int = 0
    seconds: int = 0

    def after(self, moment: datetime) -> datetime:
        """`moment` plus this duration: calendar months first (clamped), then the rest."""
        return add_months(moment, self.months) + timedelta(days=self.days, seconds=self.seconds)

    def isoformat(self) -> str:
        """The ISO-8601 text (``P1Y2M3DT4H5M6S``; weeks are written as days)."""
        years, months = divmod(self.months, 12)
        text = "P"
        text += f"{years}Y" if years else ""
        text += f"{months}M" if months else ""
        text += f"{self.days}D" if self.days else ""
        if self.seconds:
            hours, rest = divmod(self.seconds, 3600)
            minutes, seconds = divmod(rest, 60)
            text += "T"
            text += f"{hours}H" if hours else ""
            text += f"{minutes}M" if minutes else ""
            text += f"{seconds}S" if seconds else ""
        return text

    @property
    def is_zero(self) -> bool:
        """Whether it adds nothing to a moment (``P0D``)."""
        return not (self.months or self.days or self.seconds)


MAX_DURATION_MONTHS = 12_000
MAX_DURATION_DAYS = 366_000
MAX_DURATION_SECONDS = 366_000 * 86_400

_DURATION = re.compile(
    r"^P(?:(?P<years>\d{1,9})Y)?(?:(?P<months>\d{1,9})M)?(?:(?P<weeks>\d{1,9})W)?"
    r"(?:(?P<days>\d{1,9})D)?"
    r"(?:T(?:(?P<hours>\d{1,9})H)?(?:(?P<minutes>\d{1,9})M)?(?:(?P<seconds>\d{1,9})S)?)?$"
)


def parse_duration(text: str) -> Duration:
    """Parse a positive ISO-8601 duration of whole units; raise ValueError otherwise."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO-8601 duration such as P30D or P1M: {text!r}")
    parts = {name: int(value) if value else 0 for name, value in match.groupdict().items()}
    duration = Duration(
        months=parts["years"] * 12 + parts["months"],
        days=parts["weeks"] * 7 + parts["days"],
        seconds=parts["hours"] * 3600 + parts["minutes"] * 60 + parts["seconds"],
    )
    if duration.is_zero:
        raise ValueError(f"duration must be longer than zero: {text!r}")
    if (
        duration.months > MAX_DURATION_MONTHS
        or duration.days > MAX_DURATION_DAYS
        or duration.seconds > MAX_DURATION_SECONDS
    ):
        raise ValueError(f"duration is longer than 1000 years: {text!r}")
    return duration
