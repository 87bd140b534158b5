"""Numbers and times as an operator reads them: integers grouped by thousands, times in
the operator's own time zone (stored as UTC everywhere else)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache


@lru_cache(maxsize=256)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def number(value: int | None) -> str:
    """`1234567` as `1,234,567`; None as an em dash."""
    if value is None:
        return "—"
    return f"{value:,}"


def compact(value: int) -> str:
    """An axis label: `1.2M`, `35k`, `980`."""
    magnitude = abs(value)
    for size, suffix in (
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ):
        if magnitude >= size:
            scaled = value / size
            text = (
                f"{scaled:.1f}".rstrip("0").rstrip(".")
                if magnitude < 10 * size
                else f"{scaled:.0f}"
            )
            return f"{text}{suffix}"
    return str(value)


@dataclass(frozen=True)
class Formatter:
    """Formatting for one operator: `time_zone` is an IANA name."""

    time_zone: str = "UTC"
    zone: zoneinfo.ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", _zone(self.time_zone))

    def number(self, value: int | None) -> str:
        return number(value)

    def compact(self, value: int) -> str:
        return compact(value)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def time(self, moment: datetime | None) -> str:
        """`2026-12-06 14:05 CET`; None as an em dash."""
        if moment is None:
            return "—"
        local = self.local(moment)
        return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

    def time_precise(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        local = self.local(moment)
        return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"

    def date(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        return f"{self.local(moment):%Y-%m-%d}"

    def iso(self, moment: datetime | None) -> str:
        """Machine-readable (a `<time datetime=...>` attribute): UTC, ISO 8601."""
        if moment is None:
            return ""
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def axis_label(self, moment: datetime, span: timedelta) -> str:
        """A time axis tick: the hour over a short span, the day over a longer one."""
        local = self.local(moment)
        if span <= timedelta(minutes=10):
            return f"{local:%H:%M:%S}"
        if span <= timedelta(days=2):
            return f"{local:%H:%M}"
        return f"{local:%b %d}"

    def day_start(self, day: dt.date) -> datetime:
        """The instant (UTC) a day starts in the operator's time zone."""
        return datetime.combine(day, time(), self.zone).astimezone(UTC)

    def parse_day(self, text: str | None) -> dt.date | None:
        """`YYYY-MM-DD` from a filter field, or None when empty or malformed."""
        if not text:
            return None
        try:
            return dt.date.fromisoformat(text.strip()[:10])
        except ValueError:
            return None
