"""The dashboard's per-page benchmark: every page's server time at 10^6 customers and
2x10^6 ledger entries (issue 17: under 100 ms each).

The database is built as the scale part builds its large one (`bench.scale`: real
customers through the API, then bulk customers cloned from a template by INSERT ...
SELECT, each with an access source, a grant, a usage event and two ledger entries; a
few measured customers with a long history). The bulk customers' usage events are then
spread over the last 30 days, the rollup worker's fold runs until it has caught up,
and access sources are counted, as a server's worker would have done. The built
database is kept (a SQLite file in the cache folder; a PostgreSQL database named after
the size and schema revision) and reused by the next run.

Pages are requested in process through the server's ASGI app, signed in as an
operator; the time measured is the app's, from the request's arrival to the last byte
of its answer (no network, no client).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

import revenipe
from revenipe.bench import workload
from revenipe.bench.databases import libpq_url
from revenipe.bench.scale import TEMPLATE, BulkLoader
from revenipe.engine.errors import InvariantViolation
from revenipe.services import rollups
from revenipe.storage.database import _MIGRATIONS_DIR, LATEST_REVISION

BUDGET_MS = 100.0
DEFAULT_CUSTOMERS = 1_000_000
MEASURED_CUSTOMERS = 5
"""Customers with a long history (a tenth of the size in tracks, between them)."""
SPREAD_DAYS = 30
BENCH_APP_NAME = "bench dashboard"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class BuiltDatabase:
    url: str
    app_id: str
    customer_external_id: str
    """A measured customer (with a long history): its pages are the ones requested."""
    rows: dict[str, int]
    built_s: float
    reused: bool


def _spread_usage(conn: Any, days: int) -> None:
    """Spread the cloned usage events over the last `days` days (they were all made at
    one instant), so that the charts have a month of data."""
    hours = days * 24
    if conn.dialect.name == "sqlite":
        conn.execute(
            text(
                "UPDATE usage_events SET created_at = strftime('%Y-%m-%d %H:%M:%f000', "
                f"created_at, '-' || (abs(random()) % {hours}) || ' hours')"
            )
        )
    else:
        conn.execute(
            text(
                "UPDATE usage_events SET created_at = created_at - "
                f"(floor(random() * {hours}) * interval '1 hour')"
            )
        )


def build(url: str, customers: int, say: Callable[[str], None]) -> BuiltDatabase:
    """Create the bench app in the empty database at `url` and grow it to `customers`."""
    began = time.monotonic()
    with revenipe.open(url) as backend:
        created = backend.create_app(BENCH_APP_NAME, workload.catalog())
        app = backend.app(created.app.id)
        names = workload.customer_names("dash", MEASURED_CUSTOMERS)
        measured = []
        for name in names:
            app.grant_product(name, "plan")
            pack = app.grant_product(name, "pack")
            measured.append((pack.customer_id, pack.grant_ids[0]))
            for _ in range(3):
                app.track(name, workload.TRACKED_ID, workload.TRACK_VALUE)
        app.grant_entitlement(TEMPLATE, "purchased_credits", 1000)
        app.track(TEMPLATE, workload.TRACKED_ID, 1, idempotency_key="hist-0")
        loader = BulkLoader(backend.database, app.app_id, measured)
        say(f"dashboard: cloning {customers:,} customers")
        loader.grow(customers)
        with backend.database.write() as conn:
            _spread_usage(conn, SPREAD_DAYS)
        say("dashboard: folding usage into the rollups")
        folded = rollups.fold_all(backend.context, batch=5000, margin=timedelta(0))
        rollups.count_sources(backend.context)
        say(f"dashboard: folded {folded:,} usage events")
        rows = loader.counts()
        if not backend.database.is_sqlite:
            with backend.database.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
    return BuiltDatabase(url, app.app_id, names[0], rows, time.monotonic() - began, False)


def _find(url: str) -> BuiltDatabase | None:
    """The bench app of an already built database, if it is one."""
    with revenipe.open(url) as backend:
        apps = [a for a in backend.list_apps() if a.name == BENCH_APP_NAME]
        if not apps:
            return None
        with backend.database.read() as conn:
            rows = {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in ("customers", "grants", "usage_events", "ledger_entries")
            }
    name = workload.customer_names("dash", 1)[0]
    return BuiltDatabase(url, apps[0].id, name, rows, 0.0, True)


def schema_tag() -> str:
    """The schema revision and a digest of every migration: a database built under
    another schema is never reused."""
    digest = hashlib.sha256()
    for path in sorted((_MIGRATIONS_DIR / "versions").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"r{LATEST_REVISION}_{digest.hexdigest()[:8]}"


def _self_contained(path: Path) -> None:
    """Fold the write-ahead log of the SQLite file at `path` into it and leave WAL mode,
    so that renaming the file moves all of it: a `-wal` file stays behind under the old
    name (a reopened copy then missed rows, or failed with "disk I/O error"). Leaving
    WAL mode needs the only connection: it fails loudly if one is still open."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    if mode != "delete":
        raise InvariantViolation(f"{path}: still in {mode} mode: a connection is open")


def cached_sqlite(cache: Path, customers: int, say: Callable[[str], None]) -> BuiltDatabase:
    """The SQLite bench database from the cache folder, built there first if missing."""
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"dashboard-{customers}-{schema_tag()}.db"
    if final.exists():
        found = _find(f"sqlite:///{final}")
        if found is not None:
            say(f"dashboard: reusing {final}")
            return found
    building = final.with_suffix(".building.db")
    for leftover in (building, Path(f"{building}-wal"), Path(f"{building}-shm")):
        leftover.unlink(missing_ok=True)
    built = build(f"sqlite:///{building}", customers, say)
    _self_contained(building)
    for stale in (Path(f"{final}-wal"), Path(f"{final}-shm")):
        stale.unlink(missing_ok=True)
    os.replace(building, final)
    return BuiltDatabase(
        f"sqlite:///{final}",
        built.app_id,
        built.customer_external_id,
        built.rows,
        built.built_s,
        False,
    )


def cached_postgres(admin_url: str, customers: int, say: Callable[[str], None]) -> BuiltDatabase:
    """The PostgreSQL bench database (kept on the server between runs)."""
    name = f"revenipe_bench_dashboard_{customers}_{schema_tag()}"
    building = f"{name}_building"
    url = make_url(libpq_url(admin_url))
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is not None:
            found = _find(url.set(database=name).render_as_string(hide_password=False))
            if found is not None:
                say(f"dashboard: reusing PostgreSQL database {name}")
                return found
        admin.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{building}"')
    built = build(url.set(database=building).render_as_string(hide_password=False), customers, say)
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    final = url.set(database=name).render_as_string(hide_password=False)
    return BuiltDatabase(
        final, built.app_id, built.customer_external_id, built.rows, built.built_s, False
    )


# -- timing the pages -----------------------------------------------------------------------


@dataclass
class ServerTimer:
    """Wraps an ASGI app: the time of each HTTP request, from its arrival to the last
    byte of its answer."""

    app: Asgi
    last_ms: float = 0.0
    first_body_ms: float = 0.0
    """Until the first part of the body was sent (a streamed export's first rows)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        first: list[float] = []

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] != "http.response.body":
                return
            elapsed = (time.perf_counter() - began) * 1000
            if not first and (message.get("body") or not message.get("more_body")):
                first.append(elapsed)
                self.first_body_ms = elapsed
            if not message.get("more_body"):
                self.last_ms = elapsed

        await self.app(scope, receive, timed_send)


@dataclass
class PageFigures:
    name: str
    path: str
    times_ms: list[float] = field(default_factory=list)
    status: int = 0
    streamed: bool = False
    """An export streamed in batches: `times_ms` is until its first rows were sent, and
    `whole_ms` until its last (which grows with the customer's history by design)."""
    whole_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    @property
    def passed(self) -> bool:
        return self.status == 200 and self.max_ms < BUDGET_MS


def render(figures: list[PageFigures], title: str) -> str:
    width = max(len(f.name) for f in figures)
    lines = [title, f"{'page':<{width}}  {'median ms':>9}  {'max ms':>8}  status  verdict"]
    for f in figures:
        verdict = "PASS" if f.passed else "FAIL"
        lines.append(
            f"{f.name:<{width}}  {f.median_ms:>9.1f}  {f.max_ms:>8.1f}  {f.status:>6}  {verdict}"
        )
    for f in figures:
        if f.streamed and f.whole_ms:
            lines.append(
                f"  ({f.name}: first rows above; the whole export, streamed, took "
                f"{statistics.median(f.whole_ms):,.0f} ms median, {max(f.whole_ms):,.0f} ms max)"
            )
    return "\n".join(lines)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


STREAMED_ROUNDS = 3
BENCH_OPERATOR = "bench-operator@example.com"
BENCH_PASSWORD = "the dashboard bench's operator password"


def page_paths(app_id: str, customer_id: str, external_id: str) -> list[tuple[str, str]]:
    """(name, path under /dashboard) of every page the benchmark requests."""
    app = f"/apps/{app_id}"
    customer = f"{app}/customers/{customer_id}"
    prefix = external_id[: max(1, len(external_id) - 2)]
    return [
        ("overview", f"{app}/"),
        ("overview, 90 days", f"{app}/?days=90"),
        ("customers", f"{app}/customers"),
        ("customers, search by prefix", f"{app}/customers?q={prefix}"),
        ("customers, search by internal id", f"{app}/customers?q={customer_id}"),
        ("customer", customer),
        ("customer ledger CSV, first rows", f"{customer}/ledger.csv"),
        ("customer usage CSV, first rows", f"{customer}/events.csv"),
        ("analytics, 30 days per day", f"{app}/analytics?key=credits&range=30d"),
        ("analytics, 90 days per day", f"{app}/analytics?key=credits&range=90d"),
        ("analytics, 7 days per hour", f"{app}/analytics?key=credits&range=168h"),
        ("catalog", f"{app}/catalog"),
        ("catalog diff", f"{app}/catalog/diff"),
        ("settings", f"{app}/settings"),
    ]


def measure(built: BuiltDatabase, rounds: int, say: Callable[[str], None]) -> list[PageFigures]:
    """Sign an operator in and request every page `rounds` times (after one warm-up)."""
    from starlette.testclient import TestClient

    from revenipe.server.app import create_app
    from revenipe.server.settings import ServerSettings
    from revenipe.services import customers as customer_service
    from revenipe.services import operators as operator_service
    from revenipe.services.customers import CustomerRef

    with revenipe.open(built.url) as backend:
        ctx = backend.context
        if not any(o.email == BENCH_OPERATOR for o in operator_service.list_operators(ctx)):
            operator_service.create_operator(ctx, BENCH_OPERATOR, BENCH_PASSWORD)
        session = operator_service.sign_in_with_password(
            ctx, BENCH_OPERATOR, BENCH_PASSWORD, "bench"
        )
        customer = customer_service.find_customer(
            ctx, built.app_id, CustomerRef.external(built.customer_external_id)
        )
        timer = ServerTimer(create_app(ServerSettings(database_url=built.url), context=ctx))
        client = TestClient(timer, base_url="http://localhost")
        client.cookies.set("revenipe_session", session.token)
        figures = []
        for name, path in page_paths(built.app_id, customer.id, customer.external_id):
            streamed = path.endswith(".csv")
            page = PageFigures(name, path, streamed=streamed)
            # A whole export takes seconds for a long history: fewer of them.
            for attempt in range(min(rounds, STREAMED_ROUNDS) + 1 if streamed else rounds + 1):
                response = client.get(f"/dashboard{path}", follow_redirects=False)
                page.status = response.status_code
                if not attempt:  # the first one warms caches (catalog, templates)
                    continue
                page.times_ms.append(timer.first_body_ms if streamed else timer.last_ms)
                if streamed:
                    page.whole_ms.append(timer.last_ms)
            say(f"dashboard: {name}: median {page.median_ms:.1f} ms, max {page.max_ms:.1f} ms")
            figures.append(page)
    return figures
