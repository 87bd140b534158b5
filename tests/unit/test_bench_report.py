"""The bench's report: ratios, targets and the table, from figures made up here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from revenipe.bench.plan import FULL, QUICK, Plan
from revenipe.bench.report import build_report, render_text
from revenipe.bench.stats import percentile, summarize
from revenipe.cli.main import build_parser


def _figures(throughput: float, p50: float = 1.0, p99: float = 2.0) -> dict[str, Any]:
    return {
        "label": f"{throughput} calls/s",
        "throughput_per_s": throughput,
        "p50_ms": p50,
        "p99_ms": p99,
        "server_cpu_pct": 90,
        "generator_cpu_pct": 5,
    }


def _report(databases: dict[str, dict[str, Any]], plan: Plan = FULL) -> dict[str, Any]:
    return build_report(
        plan=plan,
        parts=("sql_limit", "inprocess", "http", "scale"),
        machine={"cpu_count": 2, "python": "3.11", "sqlite": "3.40", "postgresql": "15"},
        started_at=datetime(2026, 11, 25, tzinfo=UTC),
        elapsed_s=1.0,
        databases=databases,
        http_setup=None,
    )


FULL_SQLITE = {
    "sql_limit": {"concurrent": _figures(10_000), "single": _figures(8_000)},
    "inprocess": {"concurrent": _figures(6_000, p99=4.0), "single": _figures(2_000)},
    "http": {"workers_1": {"track": _figures(300), "noop": _figures(3_000)}},
    "scale": {"small": _figures(1_000, p50=0.5), "large": _figures(900, p50=0.6)},
}


def test_ratios_and_targets_come_from_the_same_run() -> None:
    report = _report({"sqlite": FULL_SQLITE, "postgresql": {}})

    ratios = report["ratios"]["sqlite"]
    assert ratios["inprocess_vs_sql"] == 0.6
    assert ratios["inprocess_vs_sql_single"] == 0.25
    assert ratios["http_vs_noop"] == 0.1
    assert ratios["scale_1e6_vs_1e3"] == 1.2
    assert report["p99_ms"] == {"sqlite": 4.0, "postgresql": None}
    targets = report["targets"]["sqlite"]
    assert targets["inprocess_vs_sql"]["met"] is True
    assert targets["http_vs_noop"]["met"] is False
    assert targets["scale_1e6_vs_1e3"]["met"] is True
    assert targets["p99_ms"]["met"] is True
    # Nothing measured: every ratio is there, as None, and no target is judged.
    assert set(report["ratios"]["postgresql"]) == set(ratios)
    assert all(v is None for v in report["ratios"]["postgresql"].values())
    assert all(t["met"] is None for t in report["targets"]["postgresql"].values())
    assert report["targets"]["postgresql"]["p99_ms"]["target"] == "< 10 ms"


def test_quick_plan_says_its_large_scale_is_not_a_million() -> None:
    assert any("not 10^6" in note for note in _report({"sqlite": {}}, QUICK)["notes"])
    assert not _report({"sqlite": {}}, FULL)["notes"]


def test_text_table_shows_each_measured_row_and_target() -> None:
    text = render_text(_report({"sqlite": FULL_SQLITE, "postgresql": {}}))
    assert "raw-SQL limit: 10000 calls/s" in text
    assert "HTTP: 300 calls/s" in text
    assert "90 / 5" in text
    assert "0.10 (>= 0.50) MISSED" in text
    assert "raw-SQL limit: 8000" in text  # single row present
    assert "PostgreSQL" in text


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
    figures = summarize("x", [0.002, 0.001, 0.003], 0.5, callers=1)
    assert figures.throughput == 6.0
    assert figures.p50_ms == 2.0


def test_cli_registers_bench_without_opening_a_database() -> None:
    args = build_parser().parse_args(
        ["bench", "--quick", "--json", "--database", "sqlite", "--parts", "sql_limit"]
    )
    assert args.needs_database is False
    assert args.quick and args.json and args.database == "sqlite"
