"""Charts as SVG, computed on the server: this module turns numbers into geometry (paths,
bars, ticks with formatted labels), and the macros of templates/charts.html draw it,
escaped like every other template. No front-end chart library, no script.

    chart = line_chart("Credits remaining", [Series("credits", points)], fmt,
                       start=period_start, end=now, y_label="credits", step=True)
    {% from "charts.html" import draw %} {{ draw(chart) }}

Every chart has a title and a description (read by screen readers: `role="img"` with
`aria-labelledby`), axis labels, and its numbers formatted as the tables format them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from revenipe.dashboard.format import Formatter

WIDTH = 720
HEIGHT = 260
LEFT = 64
RIGHT = 28
TOP = 20
BOTTOM = 44
SERIES_CLASSES = ("series-a", "series-b", "series-c", "series-d", "series-e")
"""CSS classes (colours in dashboard.css) given to series in order, when not named."""


@dataclass(frozen=True, slots=True)
class Series:
    """A line's points (time, value), in time order."""

    name: str
    points: Sequence[tuple[datetime, int]]
    css_class: str = ""


@dataclass(frozen=True, slots=True)
class BarSeries:
    """One value per category; series are stacked in the order given."""

    name: str
    values: Sequence[int]
    css_class: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    css_class: str
    line: str
    """The SVG path of the line."""
    area: str
    """The path of the area under it (closed on the x axis)."""


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    label: str
    """The bar's tooltip: category, series and formatted value."""


@dataclass(frozen=True, slots=True)
class Chart:
    kind: str
    """"line" or "bar"."""
    title: str
    description: str
    x_label: str
    y_label: str
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    lines: tuple[Line, ...] = ()
    bars: tuple[Bar, ...] = ()
    legend: tuple[tuple[str, str], ...] = ()
    """(name, css class) of each series."""
    marker: Tick | None = None
    """A vertical line across the plot (a line chart's "now", when its axis runs on)."""
    empty: bool = False
    """Nothing to draw: the template says so instead."""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM
    chart_id: str = field(default_factory=lambda: f"chart-{secrets.token_hex(4)}")


def nice_ceiling(value: int) -> tuple[int, int]:
    """An axis top at or above `value` and its tick step: 1, 2 or 5 times a power of
    ten, at most five steps (0..1 for an empty axis)."""
    if value <= 0:
        return 1, 1
    raw = value / 5
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for multiple in (1, 2, 5, 10):
        step = max(1, int(multiple * power))
        if step * 5 >= value:
            return step * math.ceil(value / step), step
    step = 10 * power
    return step * math.ceil(value / step), step


def _y_axis(top_value: int, fmt: Formatter) -> tuple[int, tuple[Tick, ...]]:
    ceiling, step = nice_ceiling(top_value)
    ticks = tuple(
        Tick(_y(value, ceiling), fmt.compact(value)) for value in range(0, ceiling + 1, step)
    )
    return ceiling, ticks


def _y(value: int, ceiling: int) -> float:
    plot_height = HEIGHT - BOTTOM - TOP
    clamped = min(max(value, 0), ceiling)
    return round(HEIGHT - BOTTOM - plot_height * clamped / ceiling, 1)


def _x_of_time(moment: datetime, start: datetime, end: datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    fraction = min(max((moment - start).total_seconds() / span, 0.0), 1.0)
    return round(LEFT + (WIDTH - RIGHT - LEFT) * fraction, 1)


def line_chart(
    title: str,
    series: Sequence[Series],
    fmt: Formatter,
    *,
    start: datetime,
    end: datetime,
    y_label: str,
    x_label: str = "",
    step: bool = False,
    until: datetime | None = None,
    description: str = "",
) -> Chart:
    """Lines (with the area under them) over the time range [start, end]. `step`: each
    value holds until the next point (a balance), drawn to `until` (default `end`: a
    balance drawn up to now on an axis that runs to the end of its period)."""
    x_label = x_label or f"time ({fmt.time_zone})"
    if not any(s.points for s in series) or end <= start:
        return Chart(
            "line", title, description or f"{title}: no data yet", x_label, y_label, empty=True
        )
    top_value = max(value for s in series for _, value in s.points)
    ceiling, y_ticks = _y_axis(top_value, fmt)
    lines = []
    legend = []
    for index, one in enumerate(series):
        css = one.css_class or SERIES_CLASSES[index % len(SERIES_CLASSES)]
        legend.append((one.name, css))
        if not one.points:
            continue
        coords = [(_x_of_time(t, start, end), _y(v, ceiling)) for t, v in one.points]
        path = f"M{coords[0][0]},{coords[0][1]}"
        for x, y in coords[1:]:
            path += f" H{x} V{y}" if step else f" L{x},{y}"
        stop_x = _x_of_time(until or end, start, end)
        if step and coords[-1][0] < stop_x:
            path += f" H{stop_x}"
        area = f"{path} V{HEIGHT - BOTTOM} H{coords[0][0]} Z"
        lines.append(Line(one.name, css, path, area))
    span = end - start
    x_ticks = tuple(
        Tick(
            _x_of_time(start + span * i / 5, start, end), fmt.axis_label(start + span * i / 5, span)
        )
        for i in range(6)
    )
    if not description:
        description = _describe_lines(title, series, fmt, start, end)
    marker = None
    if until is not None and start < until < end:
        marker = Tick(_x_of_time(until, start, end), "now")
    return Chart(
        "line",
        title,
        description,
        x_label,
        y_label,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        lines=tuple(lines),
        legend=tuple(legend),
        marker=marker,
    )


def _describe_lines(
    title: str, series: Sequence[Series], fmt: Formatter, start: datetime, end: datetime
) -> str:
    parts = [f"{title}, from {fmt.time(start)} to {fmt.time(end)}."]
    for one in series:
        if one.points:
            first, last = one.points[0][1], one.points[-1][1]
            parts.append(f"{one.name}: {fmt.number(first)} at first, {fmt.number(last)} last.")
    return " ".join(parts)


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[BarSeries],
    fmt: Formatter,
    *,
    y_label: str,
    x_label: str = "",
    description: str = "",
) -> Chart:
    """Bars, one per category, the series stacked."""
    totals = [sum(s.values[i] for s in series if i < len(s.values)) for i in range(len(categories))]
    if not categories or not any(totals):
        return Chart(
            "bar", title, description or f"{title}: no data yet", x_label, y_label, empty=True
        )
    ceiling, y_ticks = _y_axis(max(totals), fmt)
    slot = (WIDTH - RIGHT - LEFT) / len(categories)
    width = round(max(1.0, slot * 0.7), 1)
    bars = []
    legend = []
    for index, one in enumerate(series):
        css = one.css_class or SERIES_CLASSES[index % len(SERIES_CLASSES)]
        legend.append((one.name, css))
    for i, category in enumerate(categories):
        x = round(LEFT + slot * i + (slot - width) / 2, 1)
        base = 0
        for index, one in enumerate(series):
            value = one.values[i] if i < len(one.values) else 0
            if value <= 0:
                continue
            y_top = _y(base + value, ceiling)
            y_base = _y(base, ceiling)
            bars.append(
                Bar(
                    x,
                    y_top,
                    width,
                    round(y_base - y_top, 1),
                    legend[index][1],
                    f"{category}: {one.name} {fmt.number(value)}",
                )
            )
            base += value
    every = max(1, math.ceil(len(categories) / 12))
    x_ticks = tuple(
        Tick(round(LEFT + slot * i + slot / 2, 1), category)
        for i, category in enumerate(categories)
        if i % every == 0
    )
    if not description:
        description = (
            f"{title}: "
            + ", ".join(
                f"{category} {fmt.number(total)}"
                for category, total in zip(categories, totals, strict=True)
            )[:600]
        )
    return Chart(
        "bar",
        title,
        description,
        x_label,
        y_label,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        bars=tuple(bars),
        legend=tuple(legend),
    )
