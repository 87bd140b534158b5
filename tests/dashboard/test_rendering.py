"""Charts, formatting, paging and CSV cells: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from revenipe.dashboard.charts import BarSeries, Series, bar_chart, line_chart, nice_ceiling
from revenipe.dashboard.csv_export import csv_rows, safe_cell
from revenipe.dashboard.format import Formatter, compact, number
from revenipe.dashboard.paging import page_links
from revenipe.dashboard.rendering import environment

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, (1, 1)), (1, (1, 1)), (7, (8, 2)), (10, (10, 2)), (93, (100, 20)), (1234, (1500, 500))],
)
def test_axis_tops_are_round(value: int, expected: tuple[int, int]) -> None:
    assert nice_ceiling(value) == expected


def test_numbers_and_times_read_as_an_operator_reads_them() -> None:
    assert number(1234567) == "1,234,567"
    assert number(None) == "—"
    assert [compact(v) for v in (980, 1000, 35_400, 1_250_000)] == ["980", "1k", "35k", "1.2M"]
    paris = Formatter("Europe/Paris")
    assert paris.time(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == "2026-07-01 14:00 CEST"
    assert paris.time(datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) == "2026-01-01 13:00 CET"
    day = paris.parse_day("2026-07-01")
    assert day is not None and paris.day_start(day) == datetime(2026, 6, 30, 22, tzinfo=UTC)
    assert paris.parse_day("yesterday") is None
    assert Formatter("Not/AZone").time(START) == "2026-03-01 00:00 UTC"


def test_a_step_line_holds_each_value_until_the_next() -> None:
    points = [(START, 100), (START + timedelta(days=10), 60), (START + timedelta(days=20), 90)]
    chart = line_chart(
        "Credits",
        [Series("credits", points)],
        Formatter(),
        start=START,
        end=START + timedelta(days=30),
        until=START + timedelta(days=25),
        y_label="remaining",
        step=True,
    )
    assert not chart.empty
    (line,) = chart.lines
    assert line.line.startswith(f"M{chart.left:.1f},{chart.top:.1f}")  # 100: the top
    assert line.line.count(" H") == 3 and line.line.count(" V") == 2
    assert chart.marker is not None and chart.left < chart.marker.position < chart.right
    assert [t.label for t in chart.y_ticks] == ["0", "20", "40", "60", "80", "100"]
    assert chart.x_ticks[0].label == "Mar 01"
    assert "100 at first, 90 last" in chart.description


def test_an_empty_chart_says_so() -> None:
    chart = line_chart("Credits", [Series("credits", [])], Formatter(), start=START,
                       end=START + timedelta(days=1), y_label="remaining")  # fmt: skip
    assert chart.empty
    bars = bar_chart("Tracks", ["a", "b"], [BarSeries("ok", [0, 0])], Formatter(), y_label="n")
    assert bars.empty


def test_bars_stack_their_series() -> None:
    chart = bar_chart(
        "Tracks per day",
        ["Mar 01", "Mar 02"],
        [BarSeries("succeeded", [30, 5]), BarSeries("refused", [10, 0])],
        Formatter(),
        y_label="tracks",
    )
    assert [b.label for b in chart.bars] == [
        "Mar 01: succeeded 30", "Mar 01: refused 10", "Mar 02: succeeded 5",
    ]  # fmt: skip
    first, second = chart.bars[0], chart.bars[1]
    assert second.y + second.height == pytest.approx(first.y)  # refused sits on succeeded
    assert chart.legend == (("succeeded", "series-a"), ("refused", "series-b"))


def test_chart_text_is_escaped_when_drawn() -> None:
    hostile = "</title><script>alert(1)</script>"
    chart = bar_chart(hostile, [hostile], [BarSeries(hostile, [3])], Formatter(), y_label=hostile)
    drawn = environment.from_string('{% from "charts.html" import draw %}{{ draw(chart) }}').render(
        chart=chart
    )
    assert "<script>" not in drawn
    assert "&lt;/title&gt;&lt;script&gt;" in drawn


def test_keyset_links_keep_the_filters() -> None:
    links = page_links("/p", {"q": "a b", "key": ""}, after=None, last_key="cus_9", more=True)
    assert links.first is None
    assert links.next == "/p?q=a+b&after=cus_9"
    last = page_links("/p", {"q": "x"}, after="cus_9", last_key="cus_12", more=False)
    assert last.first == "/p?q=x" and last.next is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-1+2", "'-1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("plain", "plain"),
        (-5, -5),
        (None, ""),
        (True, "true"),
    ],
)
def test_csv_cells_that_could_run_as_formulas_are_quoted(value: object, expected: object) -> None:
    assert safe_cell(value) == expected


def test_csv_rows_stream_one_line_each() -> None:
    lines = list(csv_rows([["a", "=b"], [1, 'c,"d"']]))
    assert lines == ["a,'=b\r\n", '1,"c,""d"""\r\n']
