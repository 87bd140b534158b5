"""`revenipe bench` runs and reports the documented JSON shape.

Tiny counts, on SQLite and PostgreSQL: what is asserted is the shape and that figures
are positive, never timing (benchmarks print figures; they are not timed tests).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

import revenipe
from revenipe.bench import plan, scale
from revenipe.bench.databases import BenchDatabases
from revenipe.bench.plan import (
    BATCH_ITEMS,
    DECIDED_STATEMENTS,
    GROUP_THREADS,
    GROUPED_DECIDED_STATEMENTS,
    GROUPED_STATEMENTS,
    HTTP_TAIL_CONNECTIONS,
    KEPT_GRANTS_STATEMENTS,
    PARALLEL_STATEMENTS,
    QUICK,
)
from revenipe.bench.pool import WorkerPool
from revenipe.bench.report import TARGETS, render_text
from revenipe.bench.runner import CALLER_MODULES, Options, run_bench
from revenipe.cli.main import main

TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    duration_s=0.1,
    warmup_calls=2,
    customers=4,
    http_customers=20,
    scale_sizes=(40, 120),
    scale_customers=2,
    scale_calls=8,
)
FIGURES = {"callers", "calls", "seconds", "throughput_per_s", "p50_ms", "p99_ms", "mean_ms"}
GROUP = f"group_{GROUP_THREADS}_threads"
ISSUE_14_RATIOS = (
    "inprocess_vs_sql_single",
    "group_vs_sql_single",
    "http_vs_sql_single",
    "http_vs_noop",
    "http_2_vs_1_workers",
    "hot_vs_random",
    "http_p99_over_p50",
    "scale_1e6_vs_1e3",
    # and issue 16's
    "track_with_webhooks_vs_without",
)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """The caller processes, started once for the module (spawning them is the slow part)."""
    with WorkerPool(TINY.concurrency, preload=CALLER_MODULES) as workers:
        yield workers


def _kind(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def _options(database_url: str, parts: tuple[str, ...]) -> Options:
    kind = _kind(database_url)
    # On PostgreSQL the fixture's database serves as the admin connection: the bench
    # creates (and drops) databases of its own next to it.
    admin = database_url if kind == "postgresql" else "postgresql://unused"
    return Options(plan=TINY, databases=(kind,), postgres_url=admin, parts=parts)


def _assert_figures(figures: dict[str, Any]) -> None:
    assert set(figures) >= FIGURES
    assert figures["calls"] > 0
    assert figures["throughput_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["errors"] == 0
    assert figures["refused"] == 0


def test_inprocess_and_sql_limit_report_every_figure(database_url: str, pool: WorkerPool) -> None:
    kind = _kind(database_url)
    raw = run_bench(_options(database_url, ("sql_limit", "inprocess")), pool=pool)
    report = json.loads(json.dumps(raw))

    measured = report["databases"][kind]
    assert set(measured["sql_limit"]) == {
        "single",
        "concurrent",
        "hot",
        "track_statements",
        GROUPED_STATEMENTS,
        DECIDED_STATEMENTS,
        GROUPED_DECIDED_STATEMENTS,
    } | ({PARALLEL_STATEMENTS} if kind == "postgresql" else {KEPT_GRANTS_STATEMENTS})
    assert set(measured["inprocess"]) == {
        "single",
        "concurrent",
        "hot",
        GROUP,
        f"{GROUP}_hot",
        f"batch_{BATCH_ITEMS}",
        "single_without_webhooks",
        "single_with_3_webhooks",
    }
    for part in ("sql_limit", "inprocess"):
        for figures in measured[part].values():
            _assert_figures(figures)
        assert measured[part]["concurrent"]["callers"] == TINY.concurrency
    assert measured["inprocess"][GROUP]["callers"] == GROUP_THREADS
    ratios = report["ratios"][kind]
    assert {"inprocess_vs_sql", "http_vs_noop", "scale_1e6_vs_1e3"} <= set(ratios)
    assert ratios["inprocess_vs_sql"] > 0
    assert ratios["group_vs_sql_single"] > 0
    assert ratios["hot_vs_random"] > 0
    for floor in ("track_sql_vs_sql_single", "inprocess_vs_track_sql"):
        assert ratios[floor] > 0
    for floor in ("track_sql_grouped_vs_sql_single", "group_vs_track_sql_grouped"):
        assert ratios[floor] > 0
    for floor in ("track_sql_decided_vs_sql_single", "track_sql_decided_grouped_vs_sql_single"):
        assert ratios[floor] > 0
    parallel = ratios["track_sql_parallel_vs_sql_single"]
    assert parallel > 0 if kind == "postgresql" else parallel is None
    kept = ratios["track_sql_decided_kept_grants_vs_sql_single"]
    assert kept > 0 if kind == "sqlite" else kept is None
    assert ratios["batch_vs_single"] > 0  # items/s in batches of 100 over single tracks/s
    assert ratios["http_vs_noop"] is None  # not run
    assert report["p99_ms"][kind] == measured["inprocess"]["concurrent"]["p99_ms"] > 0
    assert report["targets"][kind]["group_vs_sql_single"]["met"] in (True, False)
    assert report["targets"][kind]["http_vs_noop"]["met"] is None
    machine = report["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] and machine["sqlite"]
    if kind == "postgresql":
        assert machine["postgresql"]
    text = render_text(raw)
    assert "raw-SQL limit: 1 caller" in text
    assert f"a track's statements: 1 caller, {GROUP_THREADS} tracks a commit" in text
    assert "in-process track: 2 callers, one hot customer" in text
    assert f"in-process track: {GROUP_THREADS} threads of 1 process, one hot customer" in text


def test_quick_json_has_every_ratio_of_issue_14_on_both_databases(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`revenipe bench --quick --json`, every part on both databases, as run by hand,
    with the quick plan's runs made tiny."""
    monkeypatch.setattr(plan, "QUICK", TINY)
    assert main(["bench", "--quick", "--json", "--postgres-url", postgres_url]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["plan"] == "tiny"
    assert set(report["ratios"]) == set(report["targets"]) == {"sqlite", "postgresql"}
    assert set(TARGETS) == set(ISSUE_14_RATIOS)
    for kind in ("sqlite", "postgresql"):
        ratios = report["ratios"][kind]
        # Issue 15: tracks/s in batches of 100 over single tracks/s (no target yet).
        assert isinstance(ratios["batch_vs_single"], float) and ratios["batch_vs_single"] > 0
        for name in ISSUE_14_RATIOS:
            assert isinstance(ratios[name], float), (kind, name, ratios[name])
            assert ratios[name] > 0
            target = report["targets"][kind][name]
            assert target["value"] == ratios[name]
            assert target["met"] in (True, False)
        measured = report["databases"][kind]
        for figures in (
            measured["inprocess"][GROUP],
            measured["inprocess"][f"{GROUP}_hot"],
            measured["http"]["workers_1"][f"track_{HTTP_TAIL_CONNECTIONS}"],
        ):
            _assert_figures(figures)
        assert measured["inprocess"][f"{GROUP}_hot"]["callers"] == GROUP_THREADS
        tail = measured["http"]["workers_1"][f"track_{HTTP_TAIL_CONNECTIONS}"]
        assert tail["callers"] == HTTP_TAIL_CONNECTIONS
        assert ratios["http_p99_over_p50"] == round(tail["p99_ms"] / tail["p50_ms"], 3)
    # The generator's ceiling is reported at both connection counts.
    ceilings = report["http_generator"]["ceilings"]
    assert set(ceilings) == {str(QUICK.http_connections), str(HTTP_TAIL_CONNECTIONS)}
    assert all(c["throughput_per_s"] > 0 for c in ceilings.values())
    assert report["targets"]["postgresql"]["group_vs_sql_single"]["target"] == ">= 2.00"
    assert report["targets"]["sqlite"]["group_vs_sql_single"]["target"] == ">= 0.40"
    # No call failed or was refused (the hot customer did not run out of credits).
    assert not [note for note in report["notes"] if "not comparable" in note]


def test_scale_bulk_load_keeps_every_ledger_invariant(database_url: str) -> None:
    kind = _kind(database_url)
    dbs = BenchDatabases(kind, database_url if kind == "postgresql" else None)
    try:
        stage = scale.build_stage(dbs, "verify", 60, TINY)
        assert stage.rows["customers"] == 60
        assert stage.rows["ledger_entries"] > 100
        with revenipe.open(stage.url) as backend:
            report = backend.verify()
            assert report.ok, report.problems[:5]
            # Bulk customers answer like any other: their cloned grant pays.
            app = backend.app(stage.spec.app_id)
            result = app.track(f"{scale.TEMPLATE}_0000007", "credits", 1)
            assert result.success and result.remaining == 998
            assert backend.verify().ok
    finally:
        dbs.cleanup()
