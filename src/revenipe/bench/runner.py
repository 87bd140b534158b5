"""One bench run: every part, on every asked database, with the same worker processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import revenipe
from revenipe.bench import http, scale, sql_limit, webhooks, workload
from revenipe.bench.callers import CallerSpec
from revenipe.bench.databases import BenchDatabases, settle
from revenipe.bench.plan import (
    BATCH_ITEMS,
    DATABASES,
    DECIDED_STATEMENTS,
    DEFAULT_POSTGRES_ADMIN_URL,
    GROUP_THREADS,
    GROUPED_DECIDED_STATEMENTS,
    GROUPED_STATEMENTS,
    KEPT_GRANTS_STATEMENTS,
    PARALLEL_STATEMENTS,
    PARTS,
    Plan,
)
from revenipe.bench.pool import WorkerPool, close_worker_state
from revenipe.bench.report import build_report
from revenipe.bench.scenarios import Scenario, measure_interleaved, split
from revenipe.engine.errors import InvariantViolation
from revenipe.services import rollups
from revenipe.storage.database import POSTGRES_WRITE_LANES

Progress = Callable[[str], None]
CALLER_MODULES = ("revenipe.bench.callers", "revenipe.embedded", "psycopg")


@dataclass(frozen=True)
class Options:
    plan: Plan
    databases: tuple[str, ...] = DATABASES
    postgres_url: str = DEFAULT_POSTGRES_ADMIN_URL
    parts: tuple[str, ...] = PARTS
    generator: str = "auto"
    """HTTP load generator: auto (wrk if installed, else Python), wrk or python."""


@dataclass
class _Context:
    options: Options
    pool: WorkerPool
    progress: Progress
    http_setup: http.HttpSetup | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def plan(self) -> Plan:
        return self.options.plan


def run_bench(
    options: Options, progress: Progress | None = None, *, pool: WorkerPool | None = None
) -> dict[str, Any]:
    """Measure, and return one JSON-able object with every figure, ratio and target.

    Callers run in `pool` if given (it needs `options.plan.concurrency` processes
    preloading `CALLER_MODULES`), else in a pool of this run's own."""
    say = progress or (lambda _: None)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    databases = {kind: _databases(kind, options) for kind in options.databases}
    for dbs in databases.values():
        dbs.check_reachable()
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(WorkerPool(options.plan.concurrency, preload=CALLER_MODULES))
        context = _Context(options, pool, say)
        pool.wait_ready()  # nothing else competes for the CPU while measuring
        if "http" in options.parts:
            context.http_setup = http.prepare(options.plan, options.generator, say)
        for kind, dbs in databases.items():
            try:
                context.results[kind] = _bench_database(context, kind, dbs)
            finally:
                pool.run_everywhere(close_worker_state)
                dbs.cleanup()
        if context.http_setup is not None:
            context.http_setup.cleanup()
    machine = _machine({kind: dbs.last_version for kind, dbs in databases.items()})
    return build_report(
        plan=options.plan,
        parts=options.parts,
        machine=machine,
        started_at=started_at,
        elapsed_s=time.monotonic() - started,
        databases=context.results,
        http_setup=context.http_setup,
    )


def _databases(kind: str, options: Options) -> BenchDatabases:
    if kind not in DATABASES:
        raise ValueError(f"unknown database kind {kind!r}")
    return BenchDatabases(kind, options.postgres_url if kind == "postgresql" else None)


def _fold_backlog(backend: revenipe.Backend, say: Callable[[str], None], kind: str) -> None:
    """Fold the usage events the parts before left (the in-process runs' thousands) into
    the dashboard's rollups, as a running server's worker would have all along: else the
    HTTP servers' rollup workers (docs/adr/0021) catch up on them during the measured
    runs, a cost of the bench's own history rather than of the tracks measured."""
    folded = 0
    while True:
        result = rollups.fold_usage(backend.context)
        folded += result.folded
        if not result.more:
            break
    say(f"{kind}: http: folded {folded:,} earlier usage events into the rollups first")


def _bench_database(context: _Context, kind: str, dbs: BenchDatabases) -> dict[str, Any]:
    plan = context.plan
    parts = context.options.parts
    say = context.progress
    out: dict[str, Any] = {"version": dbs.version()}
    if kind == "postgresql":
        out["autovacuum"] = dbs.autovacuum()
    url = dbs.new_url("main")
    with revenipe.open(url) as backend:
        created = backend.create_app("bench", workload.catalog())
        app = backend.app(created.app.id)
        if {"sql_limit", "inprocess"} & set(parts):
            out.update(_limit_and_inprocess(context, kind, url, app, backend))
        if "http" in parts:
            if context.http_setup is None:
                raise InvariantViolation("the http part runs after its setup")
            say(f"{kind}: http: setting up {plan.http_customers} customers")
            customers = workload.add_customers(
                app, workload.customer_names("http", plan.http_customers)
            )
            _fold_backlog(backend, say, kind)
            settle(url)
            out["http"] = http.bench_http(
                context.http_setup, kind, url, created.secret_key, customers, say
            )
    if "scale" in parts:
        stages = scale.build_stages(dbs, plan, kind, say)
        out["scale"] = scale.measure_stages(stages, context.pool, plan, kind, say)
    return out


def _limit_and_inprocess(
    context: _Context, kind: str, url: str, app: revenipe.App, backend: revenipe.Backend
) -> dict[str, dict[str, Any]]:
    """The raw-SQL limit and the in-process track: scenarios compared with each other
    are measured in rounds alternating between them (one set per comparison)."""
    plan = context.plan
    parts = context.options.parts
    n = plan.concurrency
    say = context.progress
    sql = CallerSpec(kind="sql", url=url, value=workload.TRACK_VALUE)
    track = CallerSpec(
        kind="track",
        url=url,
        app_id=app.app_id,
        tracked_id=workload.TRACKED_ID,
        value=workload.TRACK_VALUE,
    )
    # set -> [(part, scenario name, scenario)]; the 1-caller set also holds the thread
    # groups, whose ratios are taken against the raw-SQL limit with 1 caller and against
    # each other (one hot customer / many customers).
    sets: dict[str, list[tuple[str, str, Scenario]]] = {
        "single": [],
        "concurrent": [],
        "hot": [],
        "webhooks": [],
    }
    if "sql_limit" in parts:
        ids = sql_limit.prepare(url, plan.customers)
        sets["single"].append(
            ("sql_limit", "single", Scenario("1 caller, many balances", sql, [ids]))
        )
        sets["concurrent"].append(
            ("sql_limit", "concurrent", Scenario(f"{n} callers, many balances", sql, split(ids, n)))
        )
        sets["hot"].append(
            ("sql_limit", "hot", Scenario(f"{n} callers, one balance", sql, [ids[:1]] * n))
        )
        # A track's own statements without revenipe code (bench/track_sql.py), on
        # customers of their own, each set up as the tracked ones are.
        statements = CallerSpec(
            kind="track_sql",
            url=url,
            app_id=app.app_id,
            tracked_id=workload.TRACKED_ID,
            value=workload.TRACK_VALUE,
        )
        say(f"{kind}: sql_limit: setting up {plan.customers} customers for a track's statements")
        floor = workload.add_customers(app, workload.customer_names("statements", plan.customers))
        grouped = dataclasses.replace(statements, per_commit=GROUP_THREADS)
        # The same, decided by the engine: the ceiling of a track that keeps its rules
        # there. On customers of their own: their draws cross grants as real tracks'.
        decided = dataclasses.replace(statements, decide=True)
        decided_floor = workload.add_customers(
            app, workload.customer_names("decided", plan.customers)
        )
        sets["single"] += [
            (
                "sql_limit",
                "track_statements",
                Scenario("1 caller, many customers", statements, [floor]),
            ),
            (
                "sql_limit",
                GROUPED_STATEMENTS,
                Scenario(f"1 caller, {GROUP_THREADS} tracks a commit", grouped, [floor]),
            ),
            (
                "sql_limit",
                DECIDED_STATEMENTS,
                Scenario("1 caller, many customers, decided", decided, [decided_floor]),
            ),
            (
                "sql_limit",
                GROUPED_DECIDED_STATEMENTS,
                Scenario(
                    f"1 caller, {GROUP_THREADS} tracks a commit, decided",
                    dataclasses.replace(decided, per_commit=GROUP_THREADS),
                    [decided_floor],
                ),
            ),
        ]
        if kind == "sqlite":
            # Customers of its own, which nothing else writes: the one caller keeping
            # their grants (always the pool's first process) sees every change to them.
            kept = dataclasses.replace(decided, keep_grants=True)
            kept_floor = workload.add_customers(
                app, workload.customer_names("kept", plan.customers)
            )
            sets["single"].append(
                (
                    "sql_limit",
                    KEPT_GRANTS_STATEMENTS,
                    Scenario("1 caller, decided on kept grants", kept, [kept_floor]),
                )
            )
        if kind == "postgresql":
            # As many callers as the bench has processes (its concurrency: the cores),
            # at most as many as group commit has write lanes.
            lanes = min(n, POSTGRES_WRITE_LANES)
            sets["single"].append(
                (
                    "sql_limit",
                    PARALLEL_STATEMENTS,
                    Scenario(
                        f"{lanes} callers, {GROUP_THREADS} tracks a commit each",
                        grouped,
                        split(floor, lanes),
                    ),
                )
            )
    if "inprocess" in parts:
        threads = GROUP_THREADS
        # Two or more customers a thread, each thread its own.
        group_count = max(plan.customers // 2, 2 * threads)
        # A thread group warms up with a quarter of the plan's calls per thread, which
        # still makes every pooled connection open and prepare its statements (psycopg
        # prepares on the 5th run on a connection) at a quarter of the time.
        group_warmup = max(5, plan.warmup_calls // 4)
        warm_count = max(n, threads)
        total = 3 * plan.customers + group_count + 2 + warm_count
        say(f"{kind}: inprocess: setting up {total} customers")
        names = workload.customer_names
        single = workload.add_customers(app, names("single", plan.customers))
        many = workload.add_customers(app, names("many", plan.customers))
        batched = workload.add_customers(app, names("batch", plan.customers))
        batch = dataclasses.replace(track, kind="batch", batch_items=BATCH_ITEMS)
        hot = workload.add_customers(app, ["hot"])
        group = workload.add_customers(app, names("group", group_count))
        # Its pack covers far more tracks than any run makes (workload.HOT_TRACKS_COVERED);
        # a refused track would show in the scenario's `refused`.
        group_hot = workload.add_customers(app, ["group-hot"])
        # One warm-up customer per caller, thread or process: warming up is not measured,
        # and callers sharing a customer would only wait for each other's row lock.
        warm = [[name] for name in workload.add_customers(app, names("warm", warm_count))]
        in_threads = f"{threads} threads of 1 process"
        sets["single"] += [
            ("inprocess", "single", Scenario("1 caller, many customers", track, [single], warm)),
            (
                "inprocess",
                f"batch_{BATCH_ITEMS}",
                Scenario(
                    f"1 caller, batches of {BATCH_ITEMS} tracks of one customer",
                    batch,
                    [batched],
                    warm,
                ),
            ),
            (
                "inprocess",
                f"group_{threads}_threads",
                Scenario(
                    f"{in_threads}, many customers",
                    track,
                    split(group, threads),
                    warm,
                    threads=True,
                    warmup_calls=group_warmup,
                ),
            ),
            (
                "inprocess",
                f"group_{threads}_threads_hot",
                Scenario(
                    f"{in_threads}, one hot customer",
                    track,
                    [group_hot] * threads,
                    warm,
                    threads=True,
                    warmup_calls=group_warmup,
                ),
            ),
        ]
        sets["concurrent"].append(
            (
                "inprocess",
                "concurrent",
                Scenario(f"{n} callers, many customers", track, split(many, n), warm),
            )
        )
        sets["hot"].append(
            ("inprocess", "hot", Scenario(f"{n} callers, one hot customer", track, [hot] * n, warm))
        )
        say(f"{kind}: inprocess: setting up the webhooks comparison")
        sets["webhooks"] = webhooks.scenarios(backend, url, app, plan.customers)
    results: dict[str, dict[str, Any]] = {
        part: {} for part in ("sql_limit", "inprocess") if part in parts
    }
    for members in sets.values():
        if not members:
            continue
        which = " vs ".join(f"{part}.{name}" for part, name, _ in members)
        say(f"{kind}: {which}: {plan.rounds} alternating rounds")
        measured = measure_interleaved(
            context.pool,
            [scenario for _, _, scenario in members],
            rounds=plan.rounds,
            duration=plan.duration_s,
            warmup_calls=plan.warmup_calls,
        )
        for (part, name, _), figures in zip(members, measured, strict=True):
            results[part][name] = figures.to_json()
    return results


def _machine(versions: dict[str, str | None]) -> dict[str, Any]:
    import sqlite3

    import psycopg
    import sqlalchemy

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": versions.get("postgresql"),
        "psycopg": psycopg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "revenipe": revenipe.__version__,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)
