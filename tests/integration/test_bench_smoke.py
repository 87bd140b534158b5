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
from revenipe.bench import scale
from revenipe.bench.databases import BenchDatabases
from revenipe.bench.plan import QUICK
from revenipe.bench.pool import WorkerPool
from revenipe.bench.report import render_text
from revenipe.bench.runner import CALLER_MODULES, Options, run_bench

TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    duration_s=0.1,
    warmup_calls=2,
    customers=4,
    scale_sizes=(40, 120),
    scale_customers=2,
    scale_calls=8,
)
FIGURES = {"callers", "calls", "seconds", "throughput_per_s", "p50_ms", "p99_ms", "mean_ms"}


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
    for part in ("sql_limit", "inprocess"):
        assert set(measured[part]) == {"single", "concurrent", "hot"}
        for figures in measured[part].values():
            _assert_figures(figures)
        assert measured[part]["concurrent"]["callers"] == TINY.concurrency
    ratios = report["ratios"][kind]
    assert {"inprocess_vs_sql", "http_vs_noop", "scale_1e6_vs_1e3"} <= set(ratios)
    assert ratios["inprocess_vs_sql"] > 0
    assert ratios["http_vs_noop"] is None  # not run
    assert report["p99_ms"][kind] == measured["inprocess"]["concurrent"]["p99_ms"] > 0
    assert report["targets"][kind]["inprocess_vs_sql"]["met"] in (True, False)
    machine = report["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] and machine["sqlite"]
    if kind == "postgresql":
        assert machine["postgresql"]
    text = render_text(raw)
    assert "raw-SQL limit: 1 caller" in text
    assert "in-process track: 2 callers, one hot customer" in text


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
