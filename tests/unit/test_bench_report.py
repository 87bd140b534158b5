"""The bench's report: ratios, targets and the table, from figures made up here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from revenipe.bench.plan import FULL, QUICK, Plan
from revenipe.bench.report import TARGETS, build_report, render_text
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
        "machine_cpu_pct": 125,
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
    "inprocess": {
        "concurrent": _figures(6_000, p99=4.0),
        "single": _figures(2_000),
        "group_16_threads": _figures(4_000),
        "group_16_threads_hot": _figures(3_000),
    },
    "http": {
        "workers_1": {
            "track": _figures(300),
            "noop": _figures(3_000),
            "track_64": _figures(320, p50=20.0, p99=90.0),
        },
        "workers_2": {"track": _figures(450), "noop": _figures(5_000)},
    },
    "scale": {"small": _figures(1_000, p50=0.5), "large": _figures(900, p50=0.6)},
}


def test_ratios_and_targets_come_from_the_same_run() -> None:
    report = _report({"sqlite": FULL_SQLITE, "postgresql": {}})

    ratios = report["ratios"]["sqlite"]
    assert ratios["inprocess_vs_sql"] == 0.6
    assert ratios["inprocess_vs_sql_single"] == 0.25
    assert ratios["group_vs_sql_single"] == 0.5
    assert ratios["hot_vs_random"] == 0.75
    assert ratios["http_vs_noop"] == 0.1
    assert ratios["http_vs_sql_single"] == 0.037
    assert ratios["http_2_vs_1_workers"] == 1.5
    assert ratios["http_2_vs_1_workers_cpu_ceiling"] == 1.6  # 2 cores / 1.25 busy
    assert ratios["http_p99_over_p50"] == 4.5
    assert ratios["scale_1e6_vs_1e3"] == 1.2
    assert report["p99_ms"] == {"sqlite": 4.0, "postgresql": None}
    targets = report["targets"]["sqlite"]
    assert {name: t["met"] for name, t in targets.items()} == {
        "inprocess_vs_sql_single": False,  # 0.25 < 0.30
        "group_vs_sql_single": True,  # 0.5 >= 0.40
        "http_vs_sql_single": False,
        "http_vs_noop": False,
        "http_2_vs_1_workers": True,
        "hot_vs_random": False,  # 0.75 < 0.8
        "http_p99_over_p50": False,  # 4.5 > 4
        "scale_1e6_vs_1e3": True,
        "track_with_webhooks_vs_without": None,  # not measured in FULL_SQLITE
    }
    assert targets["group_vs_sql_single"]["value"] == 0.5
    # Nothing measured: every ratio is there, as None, and no target is judged.
    assert set(report["ratios"]["postgresql"]) == set(ratios)
    assert all(v is None for v in report["ratios"]["postgresql"].values())
    assert all(t["met"] is None for t in report["targets"]["postgresql"].values())


def test_targets_follow_issue_14_per_database() -> None:
    report = _report({"sqlite": FULL_SQLITE, "postgresql": FULL_SQLITE})
    texts = {
        kind: {name: t["target"] for name, t in report["targets"][kind].items()}
        for kind in ("sqlite", "postgresql")
    }
    assert texts["sqlite"] == {
        "inprocess_vs_sql_single": ">= 0.30",
        "group_vs_sql_single": ">= 0.40",
        "http_vs_sql_single": ">= 0.15",
        "http_vs_noop": ">= 0.50",
        "http_2_vs_1_workers": ">= 1.00",
        "hot_vs_random": ">= 0.80",
        "http_p99_over_p50": "<= 4.00",
        "scale_1e6_vs_1e3": "<= 1.25",
        "track_with_webhooks_vs_without": ">= 0.90",
    }
    assert texts["postgresql"] == {
        **texts["sqlite"],
        "inprocess_vs_sql_single": ">= 0.70",
        "group_vs_sql_single": ">= 2.00",
        "http_vs_sql_single": ">= 1.00",
        "http_2_vs_1_workers": ">= 1.50",
    }
    # The same figures meet a target on one database and miss it on the other.
    assert report["targets"]["sqlite"]["group_vs_sql_single"]["met"] is True
    assert report["targets"]["postgresql"]["group_vs_sql_single"]["met"] is False
    assert TARGETS["http_p99_over_p50"].met("sqlite", 4.0)
    assert not TARGETS["http_p99_over_p50"].met("sqlite", 4.01)


def test_the_group_ceiling_comes_from_a_track_s_own_statements() -> None:
    def statements(throughput: float, cpu_us: float | None) -> dict[str, Any]:
        figures = _figures(throughput)
        if cpu_us is not None:
            figures["machine_cpu_us_per_call"] = cpu_us
        return figures

    limit = {
        "single": _figures(2_000),
        "track_statements_16_a_commit": statements(1_600, 400.0),
        "track_statements_16_a_commit_in_parallel": statements(2_200, 500.0),
    }
    report = _report({"sqlite": {"sql_limit": limit}, "postgresql": {"sql_limit": limit}})
    # SQLite: one writer at a time, so the statements 16 a commit from one caller.
    assert report["ratios"]["sqlite"]["group_vs_sql_single_ceiling"] == 0.8
    # PostgreSQL: 2 cores at the cheaper CPU a track (400 us): 5,000/s, over 2,000/s.
    assert report["ratios"]["postgresql"]["group_vs_sql_single_ceiling"] == 2.5
    unmeasured = {**limit, "track_statements_16_a_commit": statements(1_600, None)}
    unmeasured["track_statements_16_a_commit_in_parallel"] = statements(2_200, None)
    report = _report({"postgresql": {"sql_limit": unmeasured}})
    assert report["ratios"]["postgresql"]["group_vs_sql_single_ceiling"] is None


def test_the_machine_s_cpu_a_call_is_reported_when_measured() -> None:
    figures = summarize("x", [0.001] * 500, 2.0, callers=1, machine_cpu_s=0.5).to_json()
    assert (figures["machine_cpu_pct"], figures["machine_cpu_us_per_call"]) == (25, 1000.0)
    assert "machine_cpu_pct" not in summarize("x", [0.001], 1.0, callers=1).to_json()


def test_failed_or_refused_calls_are_noted() -> None:
    hot = {**FULL_SQLITE["inprocess"]["group_16_threads_hot"], "errors": 0, "refused": 7}
    sqlite = {**FULL_SQLITE, "inprocess": {**FULL_SQLITE["inprocess"], "group_16_threads_hot": hot}}
    notes = _report({"sqlite": sqlite}, FULL)["notes"]
    assert notes == [
        "sqlite.inprocess.group_16_threads_hot: 0 calls failed and 7 were refused: "
        "its ratios are not comparable"
    ]


def test_a_postgresql_server_without_autovacuum_is_noted() -> None:
    for autovacuum, noted in ((False, True), (True, False), (None, False)):
        notes = _report({"postgresql": {"version": "15", "autovacuum": autovacuum}})["notes"]
        assert any("without autovacuum" in note for note in notes) is noted, autovacuum


def test_quick_plan_says_its_large_scale_is_not_a_million() -> None:
    assert any("not 10^6" in note for note in _report({"sqlite": {}}, QUICK)["notes"])
    assert not _report({"sqlite": {}}, FULL)["notes"]


def test_text_table_shows_each_measured_row_and_target() -> None:
    text = render_text(_report({"sqlite": FULL_SQLITE, "postgresql": {}}))
    assert "raw-SQL limit: 10000 calls/s" in text
    assert "HTTP: 300 calls/s" in text
    assert "90 / 5 / 125" in text
    assert "0.10 (>= 0.50) MISSED" in text
    assert "targets of issue 14" in text
    assert "HTTP: 320 calls/s" in text  # the 64-connection run
    assert "in-process track: 4000 calls/s" in text  # the thread group
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
