"""Scale: is a track as fast with 10^6 customers and ledger entries as with 10^3?

The database gets a real app and catalog, and real customers created through the API:
the measured ones (holding plan, bonus and pack grants, like every in-process customer)
and one template customer (a grant of 1,000 purchased credits and one track). Bulk
customers are then cloned from the template by INSERT ... SELECT over a series, every
id suffixed (`cus_...` -> `cus_..._0000042`), so each gets a customer row, an access
source, a grant, a usage event and two ledger entries exactly as the API wrote them.
The measured customers also get a history (a tenth of the size in usage events and
consumed ledger entries, their grant balances lowered to match), so that a track's
own customer is an old one too. Every ledger invariant still holds (`revenipe verify`).

Two such databases are built, one at the small size (10^3) and one at the large size
(10^6). PostgreSQL gets a VACUUM ANALYZE after the load (what autovacuum would do soon
after); SQLite a WAL checkpoint. Tracks (one caller) are then timed on both, in rounds
alternating between them, so that a noisy moment of the machine hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, select, text

import revenipe
from revenipe.bench import workload
from revenipe.bench.callers import CallerSpec
from revenipe.bench.databases import BenchDatabases
from revenipe.bench.plan import Plan
from revenipe.bench.pool import WorkerPool
from revenipe.bench.scenarios import Scenario, measure_interleaved
from revenipe.storage.database import Database
from revenipe.storage.schema import access_sources, customers, grants, ledger_entries, usage_events

CHUNK = 200_000
HISTORY_FRACTION = 10
"""The measured customers' history, all together: size / HISTORY_FRACTION tracks."""
TEMPLATE = "template"

_ID_COLUMNS = frozenset(
    {
        "id",
        "external_id",
        "customer_id",
        "source_id",
        "grant_id",
        "usage_event_id",
        "reversal_id",
        "access_source_id",
    }
)


def _fast_load(conn: Connection) -> None:
    """On PostgreSQL, skip foreign-key checks for this bulk transaction when allowed
    (a superuser's session_replication_role): the cloned rows are consistent by
    construction, and the checks would triple the load time. Without the privilege the
    load is just slower."""
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    allowed = conn.exec_driver_sql(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).scalar()
    if allowed:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")


def _series(dialect: str) -> tuple[str, str]:
    """(a WITH clause naming `series(x)` from :lo to :hi, the id suffix of x)."""
    if dialect == "sqlite":
        return (
            "WITH RECURSIVE series(x) AS "
            "(SELECT :lo UNION ALL SELECT x + 1 FROM series WHERE x < :hi)",
            "printf('_%07d', x)",
        )
    return (
        "WITH series(x) AS (SELECT generate_series(CAST(:lo AS integer), CAST(:hi AS integer)))",
        "'_' || lpad(x::text, 7, '0')",
    )


@dataclass
class BulkLoader:
    """Grows one app's data by cloning the template customer and adding history."""

    database: Database
    app_id: str
    measured: Sequence[tuple[str, str]]
    """(customer id, pack grant id) of each measured customer."""
    bulk: int = 0
    history: int = 0
    _templates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def load_template(self, conn: Connection) -> None:
        customer = conn.execute(
            select(customers).where(
                customers.c.app_id == self.app_id, customers.c.external_id == TEMPLATE
            )
        ).one()
        for table, order in (
            (customers, customers.c.id),
            (access_sources, access_sources.c.id),
            (grants, grants.c.id),
            (usage_events, usage_events.c.id),
            (ledger_entries, ledger_entries.c.id),
        ):
            key = table.c.id if table is customers else table.c.customer_id
            rows = conn.execute(
                text(f"SELECT * FROM {table.name} WHERE {key.name} = :c ORDER BY {order.name}"),
                {"c": customer.id},
            )
            self._templates[table.name] = [dict(r._mapping) for r in rows]

    def grow(self, customers_total: int) -> None:
        """Clone bulk customers until the app has `customers_total`, and add history."""
        wanted = max(0, customers_total - len(self.measured) - 1)
        with self.database.write() as conn:
            if not self._templates:
                self.load_template(conn)
        while self.bulk < wanted:
            lo, hi = self.bulk + 1, min(wanted, self.bulk + CHUNK)
            with self.database.write() as conn:
                _fast_load(conn)
                self._clone(conn, lo, hi)
            self.bulk = hi
        self._add_history(customers_total // HISTORY_FRACTION)
        self._settle()

    def _clone(self, conn: Connection, lo: int, hi: int) -> None:
        series, suffix = _series(conn.dialect.name)
        # Parents before children; ledger rows one template entry at a time, so each
        # grant's entries keep their order (ids ascending) as the running sum needs.
        for table in (customers, access_sources, grants, usage_events, ledger_entries):
            for row in self._templates[table.name]:
                self._insert(conn, table, row, series, suffix, {"lo": lo, "hi": hi})

    def _insert(
        self,
        conn: Connection,
        table: Table,
        row: Mapping[str, Any],
        series: str,
        suffix: str,
        params: dict[str, Any],
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        columns = [
            c.name for c in table.columns if not (table is ledger_entries and c.name == "id")
        ]
        values = []
        binds = dict(params)
        for i, name in enumerate(columns):
            if overrides and name in overrides:
                values.append(overrides[name])
                continue
            binds[f"v{i}"] = row[name]
            value = f":v{i}"
            if conn.dialect.name == "postgresql":
                # Parameters of INSERT ... SELECT get no type from the target column.
                value = f"CAST({value} AS {table.c[name].type.compile(dialect=conn.dialect)})"
            if name in _ID_COLUMNS and row[name] is not None:
                value = f"{value} || {suffix}"
            values.append(value)
        conn.execute(
            text(
                f"{series} INSERT INTO {table.name} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM series"
            ),
            binds,
        )

    def _add_history(self, total: int) -> None:
        """Bring the measured customers' history to `total` tracks (spread evenly)."""
        per_customer = total // max(1, len(self.measured))
        if per_customer <= self.history:
            return
        lo, hi = self.history + 1, per_customer
        event = self._templates[usage_events.name][0]
        consumed = next(e for e in self._templates[ledger_entries.name] if e["amount"] < 0)
        with self.database.write() as conn:
            series, _ = _series(conn.dialect.name)
            number = (
                "printf('%08d', x)" if conn.dialect.name == "sqlite" else "lpad(x::text, 8, '0')"
            )
            for j, (customer_id, grant_id) in enumerate(self.measured):
                balance = conn.execute(
                    select(grants.c.balance).where(grants.c.id == grant_id)
                ).scalar_one()
                event_id = f"'use_h{j:04d}' || {number}"
                params = {"lo": lo, "hi": hi, "c": customer_id, "g": grant_id, "b": balance}
                self._insert(
                    conn,
                    usage_events,
                    event,
                    series,
                    "''",
                    params,
                    {
                        "id": event_id,
                        "customer_id": ":c",
                        "idempotency_key": f"'hist-' || {number}",
                    },
                )
                self._insert(
                    conn,
                    ledger_entries,
                    consumed,
                    series,
                    "''",
                    params,
                    {
                        "customer_id": ":c",
                        "grant_id": ":g",
                        "usage_event_id": event_id,
                        "balance_after": f":b - (x - {lo - 1}) * {-consumed['amount']}",
                    },
                )
                conn.execute(
                    grants.update()
                    .where(grants.c.id == grant_id)
                    .values(balance=grants.c.balance - (hi - lo + 1) * -consumed["amount"])
                )
        self.history = hi

    def _settle(self) -> None:
        engine = self.database.engine
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.database.is_sqlite:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.exec_driver_sql("VACUUM ANALYZE")

    def counts(self) -> dict[str, int]:
        with self.database.read() as conn:
            return {
                table.name: int(
                    conn.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one()
                )
                for table in (customers, grants, usage_events, ledger_entries)
            }


@dataclass
class Stage:
    size: int
    url: str
    spec: CallerSpec
    names: list[str]
    rows: dict[str, int]
    load_s: float


def build_stage(dbs: BenchDatabases, name: str, size: int, plan: Plan) -> Stage:
    """A database with the bench app, the measured customers and `size` customers."""
    url = dbs.new_url(name)
    with revenipe.open(url) as backend:
        created = backend.create_app("bench scale", workload.catalog())
        app = backend.app(created.app.id)
        names = workload.customer_names("scale", plan.scale_customers)
        measured = []
        for customer in names:
            app.grant_product(customer, "plan")
            app.grant_entitlement(customer, "bonus_credits", 4)
            pack = app.grant_product(customer, "pack")
            measured.append((pack.customer_id, pack.grant_ids[0]))
        app.grant_entitlement(TEMPLATE, "purchased_credits", 1000)
        app.track(TEMPLATE, workload.TRACKED_ID, 1, idempotency_key="hist-0")
        loader = BulkLoader(backend.database, app.app_id, measured)
        began = time.monotonic()
        loader.grow(size)
        load_s = time.monotonic() - began
        rows = loader.counts()
    spec = CallerSpec(
        kind="track",
        url=url,
        app_id=created.app.id,
        tracked_id=workload.TRACKED_ID,
        value=workload.TRACK_VALUE,
    )
    return Stage(size, url, spec, names, rows, load_s)


def build_stages(
    dbs: BenchDatabases, plan: Plan, kind: str, say: Callable[[str], None]
) -> dict[str, Stage]:
    """The small and the large database, loaded."""
    stages: dict[str, Stage] = {}
    for name, size in zip(("small", "large"), plan.scale_sizes, strict=True):
        say(f"{kind}: scale: loading {size:,} customers")
        stages[name] = build_stage(dbs, f"scale_{name}", size, plan)
    return stages


def measure_stages(
    stages: dict[str, Stage], pool: WorkerPool, plan: Plan, kind: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """Track latency (one caller) at the small and the large size, in alternating rounds."""
    say(f"{kind}: scale: timing {plan.scale_calls} tracks at each size, {plan.rounds} rounds")
    measured = measure_interleaved(
        pool,
        [
            Scenario(
                f"1 caller, {stage.rows['customers']:,} customers, "
                f"{stage.rows['ledger_entries']:,} ledger entries",
                stage.spec,
                [stage.names],
            )
            for stage in stages.values()
        ],
        rounds=plan.rounds,
        max_calls=plan.scale_calls,
        warmup_calls=plan.warmup_calls,
    )
    result: dict[str, Any] = {"sizes": {name: stage.size for name, stage in stages.items()}}
    for (name, stage), figures in zip(stages.items(), measured, strict=True):
        result[name] = {**figures.to_json(), "rows": stage.rows, "load_s": round(stage.load_s, 1)}
    return result
