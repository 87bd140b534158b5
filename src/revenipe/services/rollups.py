"""Usage rolled up for the dashboard (docs/adr/0021), and what its charts read.

A track writes nothing here: every server process runs a `RollupWorker` that folds the
usage events committed since a stored watermark into per-hour and per-customer-day
rows, in id order (ids sort by creation time). Only events older than the *write
horizon* are folded, so that none can commit later below the watermark:

- SQLite: the horizon is the moment the fold held the database's write lock (one writer
  at a time, in every process: any event made before then has committed already).
- PostgreSQL: the start of the oldest transaction that is writing (an event's id is
  made after its transaction locked the customer), or the database's clock, less
  `POSTGRES_CLOCK_MARGIN` for the skew between the servers' clocks and the database's.

The watermark moves by compare-and-set in the transaction that adds the rows, so with
any number of workers each event is added exactly once. The fold reads events by
primary key range and the pages read only the rollups: no request reads usage events
or the ledger (docs/adr/0013).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo

from sqlalchemy import Connection

from revenipe.engine.errors import RefusalCode
from revenipe.services.context import ServiceContext
from revenipe.storage import customers as customer_store
from revenipe.storage import rollups as store
from revenipe.storage.database import Database

log = logging.getLogger("revenipe.rollups")

FOLD_BATCH = 1000
"""Usage events per fold transaction (on SQLite it holds the write lock: a batch of
1,000 events of as many customers writes for 13 to 90 ms, docs/adr/0021)."""
POSTGRES_CLOCK_MARGIN = timedelta(seconds=5)
"""How far the servers' clocks may be behind the database's (PostgreSQL's horizon)."""
UNKNOWN_TRACKED_ID = "?"
"""Where refusals of ids the catalog does not know are counted: one row, not one per
made-up id."""
IDLE_TOUCH = timedelta(seconds=10)
"""An idle fold moves `folded_to` forward at most this often (a write, when nothing
else is written)."""
TOP_PER_DAY = 50
"""Customers read from the top of each day's list to find the top customers of a range."""


def _bound(micros: int) -> str:
    """The smallest usage event id made at `micros` (ids: `use_` + 14 hex digits of
    microseconds + 12 random hex digits): every id made earlier sorts below it."""
    return f"use_{micros:014x}"


def _moment(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _micros_of(event_id: str) -> int | None:
    try:
        return int(event_id[4:18], 16)
    except ValueError:
        return None


def _write_horizon_micros(db: Database, margin: timedelta) -> int:
    if db.is_sqlite:
        with db.write():
            # Holding the write lock: every writer before us has committed or rolled back.
            return time.time_ns() // 1000
    with db.read() as conn:
        horizon = store.find_postgres_write_horizon_micros(conn)
    return horizon - margin // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FoldResult:
    folded: int
    """Usage events added to the rollups by this call."""
    more: bool
    """A full batch: more events may be waiting."""
    lost_race: bool = False
    """Another process moved the watermark first; nothing was written."""


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class _Folded:
    hours: dict[tuple[str, str, datetime], list[int]] = field(default_factory=dict)
    customer_days: dict[tuple[str, str, datetime, str], list[int]] = field(default_factory=dict)
    active: dict[tuple[str, datetime], set[str]] = field(default_factory=lambda: defaultdict(set))


def aggregate(events: Sequence[store.FoldEvent]) -> _Folded:
    """The rollup rows a batch of usage events adds (pure)."""
    folded = _Folded()
    for e in events:
        tracked = UNKNOWN_TRACKED_ID if e.error == RefusalCode.UNKNOWN_ENTITLEMENT else e.tracked_id
        hour, day = _hour(e.created_at), _day(e.created_at)
        h = folded.hours.setdefault((e.app_id, tracked, hour), [0, 0, 0, 0])
        c = folded.customer_days.setdefault((e.app_id, tracked, day, e.customer_id), [0, 0, 0])
        c[0] += 1
        if e.success:
            h[0] += 1
            h[2] += e.consumed
            c[2] += e.consumed
        else:
            h[1] += 1
            h[3] += e.requested
            c[1] += 1
        folded.active[(e.app_id, day)].add(e.customer_id)
    return folded


def fold_usage(
    ctx: ServiceContext, *, batch: int = FOLD_BATCH, margin: timedelta = POSTGRES_CLOCK_MARGIN
) -> FoldResult:
    """Fold the next batch of committed usage events into the rollups (one write
    transaction); safe to call from any number of processes at once. `margin`: how far
    behind the database's clock a server's may be (PostgreSQL)."""
    db = ctx.db
    with db.read() as conn:
        mark = store.get_watermark(conn, store.USAGE_EVENTS_STREAM)
    if mark is None:
        with db.write() as conn:
            store.insert_watermark_if_new(conn, store.USAGE_EVENTS_STREAM)
        with db.read() as conn:
            mark = store.get_watermark(conn, store.USAGE_EVENTS_STREAM)
        if mark is None:
            raise LookupError("the usage events watermark is missing after inserting it")
    horizon = _write_horizon_micros(db, margin)
    before = _bound(horizon)
    with db.read() as conn:
        events = store.list_events_after(conn, mark.position, before, batch)
    more = len(events) == batch
    if more:
        position = events[-1].id
        folded_micros = _micros_of(position)
        folded_to = _moment(folded_micros) if folded_micros is not None else None
    else:
        position = max(mark.position, before)
        folded_to = _moment(horizon)
    now = ctx.now()
    if not events and mark.updated_at is not None and now - mark.updated_at < IDLE_TOUCH:
        return FoldResult(0, more=False)
    if folded_to is None or (mark.folded_to is not None and folded_to < mark.folded_to):
        folded_to = mark.folded_to or _moment(horizon)
    folded = aggregate(events)
    with db.write() as conn:
        moved = store.update_watermark(
            conn,
            store.USAGE_EVENTS_STREAM,
            old=mark.position,
            new=position,
            folded_to=folded_to,
            now=now,
        )
        if not moved:
            return FoldResult(0, more=True, lost_race=True)
        store.add_hours(
            conn,
            (store.HourRow(a, t, h, *v) for (a, t, h), v in sorted(folded.hours.items())),
        )
        store.add_customer_days(
            conn,
            (
                store.CustomerDayRow(a, t, d, c, *v)
                for (a, t, d, c), v in sorted(folded.customer_days.items())
            ),
        )
        store.insert_active_customers(conn, folded.active)
    return FoldResult(len(events), more=more)


def fold_all(
    ctx: ServiceContext, *, batch: int = FOLD_BATCH, margin: timedelta = POSTGRES_CLOCK_MARGIN
) -> int:
    """Fold until caught up with the horizon (tests, the benchmark, a fresh start);
    how many events were folded."""
    total = 0
    while True:
        result = fold_usage(ctx, batch=batch, margin=margin)
        total += result.folded
        if not result.more:
            return total


def count_sources(ctx: ServiceContext, *, every: timedelta | None = None) -> bool:
    """Recount access sources by app, kind and status (a read of the whole table, in the
    worker only), unless another process did within `every`. True if counted."""
    now = ctx.now()
    with ctx.db.read() as conn:
        mark = store.get_watermark(conn, store.SOURCE_COUNTS_STREAM)
        if _recent(mark, now, every):
            return False
        counts = store.list_counted_sources(conn)
    with ctx.db.write() as conn:
        if _recent(store.lock_watermark(conn, store.SOURCE_COUNTS_STREAM), now, every):
            return False
        store.save_source_counts(conn, counts, now)
        store.update_watermark_time(conn, store.SOURCE_COUNTS_STREAM, now)
    return True


def _recent(mark: store.Watermark | None, now: datetime, every: timedelta | None) -> bool:
    if every is None or mark is None or mark.updated_at is None:
        return False
    return timedelta(0) <= now - mark.updated_at < every


# -- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupSettings:
    poll_seconds: float = 1.0
    source_count_every: timedelta = timedelta(seconds=60)
    batch: int = FOLD_BATCH
    clock_margin: timedelta = POSTGRES_CLOCK_MARGIN
    catch_up_pause_seconds: float = 0.05
    """Between full batches (a backlog, or a first start on an old database): tracks
    get the write lock in between."""


class RollupWorker:
    """Folds usage and recounts sources on a thread; every server process runs one."""

    def __init__(self, ctx: ServiceContext, settings: RollupSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = settings or RollupSettings()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="usage-rollups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.settings.poll_seconds
            try:
                result = fold_usage(
                    self.ctx, batch=self.settings.batch, margin=self.settings.clock_margin
                )
                if result.more and not result.lost_race:
                    wait = self.settings.catch_up_pause_seconds
                count_sources(self.ctx, every=self.settings.source_count_every)
            except Exception as exc:
                # The database is down or busy: said in one line, tried again later.
                log.warning("usage rollup paused (%s: %s); retrying", type(exc).__name__, exc)
                wait = 2.0
            self._stop.wait(wait)


# -- what the pages read ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    """A day in the operator's time zone."""
    succeeded: int
    refused: int


@dataclass(frozen=True, slots=True)
class KeyTotal:
    tracked_id: str
    consumed: int
    succeeded: int
    refused: int


@dataclass(frozen=True, slots=True)
class Overview:
    days: list[DayFigures]
    active_customers: list[tuple[date, int]]
    """Per UTC day."""
    top_keys: list[KeyTotal]
    sources: list[store.SourceCountRow]
    folded_to: datetime | None
    """Usage up to this moment is counted."""
    sources_counted_at: datetime | None


def _every_day(
    counts: Sequence[tuple[datetime, int]], first: datetime, last: datetime
) -> list[tuple[date, int]]:
    """Every UTC day from `first` to `last`, 0 where nothing was counted."""
    known = {d: n for d, n in counts}
    days = []
    day = first
    while day <= last:
        days.append((day.date(), known.get(day, 0)))
        day += timedelta(days=1)
    return days


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def overview(
    ctx: ServiceContext, app_id: str, *, days: int, zone: tzinfo, top: int = 8
) -> Overview:
    """An app's tracks per day (the operator's days), active customers per UTC day, top
    tracked ids, sources by status, over the last `days` days."""
    today = ctx.now().astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    since, until = _local_midnight(first, zone), _local_midnight(today + timedelta(days=1), zone)
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        hours = store.list_app_hours(conn, app_id, since, until)
        active = store.list_active_days(conn, app_id, _day(since), until)
        sources = store.list_source_counts(conn, app_id)
        mark = store.get_watermark(conn, store.USAGE_EVENTS_STREAM)
    per_day: dict[date, list[int]] = {first + timedelta(days=i): [0, 0] for i in range(days)}
    per_key: dict[str, list[int]] = {}
    for h in hours:
        figures = per_day.get(h.hour.astimezone(zone).date())
        if figures is not None:
            figures[0] += h.succeeded
            figures[1] += h.refused
        k = per_key.setdefault(h.tracked_id, [0, 0, 0])
        k[0] += h.consumed
        k[1] += h.succeeded
        k[2] += h.refused
    top_keys = sorted(
        (KeyTotal(t, *v) for t, v in per_key.items()),
        key=lambda k: (-k.consumed, -k.succeeded - k.refused, k.tracked_id),
    )[:top]
    return Overview(
        days=[DayFigures(d, s, r) for d, (s, r) in sorted(per_day.items())],
        active_customers=_every_day(active, _day(since), _day(ctx.now())),
        top_keys=top_keys,
        sources=sources,
        folded_to=mark.folded_to if mark is not None else None,
        sources_counted_at=max((s.counted_at for s in sources), default=None),
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    """UTC start of the hour, or the operator's midnight (as UTC) of the day."""
    consumed: int
    succeeded: int
    refused: int
    refused_units: int


@dataclass(frozen=True, slots=True)
class TopCustomer:
    customer_id: str
    consumed: int
    tracks: int
    refused: int
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Analytics:
    tracked_id: str
    granularity: str
    buckets: list[Bucket]
    top_customers: list[TopCustomer]
    top_exact: bool
    """False: the list ranks the customers found among each day's top `TOP_PER_DAY`,
    and one outside them might belong in it."""
    top_since: datetime
    """The top customers count whole UTC days from here to `top_until`."""
    top_until: datetime
    tracked_ids: list[str]
    folded_to: datetime | None


GRANULARITIES = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 24 * 31


def usage_analytics(
    ctx: ServiceContext,
    app_id: str,
    tracked_id: str,
    *,
    granularity: str,
    since: datetime,
    until: datetime,
    zone: tzinfo,
    top: int = 10,
) -> Analytics:
    """One tracked id's consumption and refusals per hour or per day (the operator's
    days) in [since, until), and its top customers over the UTC days covering it."""
    step = GRANULARITIES[granularity]
    if until <= since or (until - since) / step > MAX_BUCKETS:
        raise ValueError(f"a range of 1 to {MAX_BUCKETS} {granularity}s")
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        hours = store.list_tracked_hours(conn, app_id, tracked_id, since, until)
        tracked_ids = store.list_tracked_ids(conn, app_id, since - timedelta(days=90), until)
        first_day, end_day = (
            _day(since),
            _day(until - timedelta(microseconds=1)) + timedelta(days=1),
        )
        days = [first_day + timedelta(days=i) for i in range((end_day - first_day).days)]
        ranked, exact = _top_customers(conn, app_id, tracked_id, days, top)
        ranked = [_with_external_id(conn, app_id, t) for t in ranked]
        mark = store.get_watermark(conn, store.USAGE_EVENTS_STREAM)
    buckets = _buckets(hours, granularity, since, until, zone)
    return Analytics(
        tracked_id=tracked_id,
        granularity=granularity,
        buckets=buckets,
        top_customers=ranked,
        top_exact=exact,
        top_since=first_day,
        top_until=end_day,
        tracked_ids=tracked_ids,
        folded_to=mark.folded_to if mark is not None else None,
    )


def list_tracked_ids(
    ctx: ServiceContext, app_id: str, since: datetime, until: datetime
) -> list[str]:
    """The ids an app tracked in [since, until), from the hourly rollups."""
    with ctx.db.read() as conn:
        ctx.require_app(conn, app_id)
        return store.list_tracked_ids(conn, app_id, since, until)


def _with_external_id(conn: Connection, app_id: str, top: TopCustomer) -> TopCustomer:
    customer = customer_store.find_customer(conn, app_id, customer_id=top.customer_id)
    return replace(top, external_id=customer.external_id if customer is not None else None)


def _buckets(
    hours: Sequence[store.HourRow], granularity: str, since: datetime, until: datetime, zone: tzinfo
) -> list[Bucket]:
    sums: dict[datetime, list[int]] = {}
    if granularity == "hour":
        moment = _hour(since)
        while moment < until:
            sums[moment] = [0, 0, 0, 0]
            moment += timedelta(hours=1)

        def key(h: store.HourRow) -> datetime:
            return h.hour
    else:
        day = since.astimezone(zone).date()
        while _local_midnight(day, zone) < until:
            sums[_local_midnight(day, zone)] = [0, 0, 0, 0]
            day += timedelta(days=1)

        def key(h: store.HourRow) -> datetime:
            return _local_midnight(h.hour.astimezone(zone).date(), zone)

    for h in hours:
        s = sums.get(key(h))
        if s is None:
            continue
        s[0] += h.consumed
        s[1] += h.succeeded
        s[2] += h.refused
        s[3] += h.refused_units
    return [Bucket(start, *v) for start, v in sorted(sums.items())]


def _top_customers(
    conn: Connection, app_id: str, tracked_id: str, days: Sequence[datetime], top: int
) -> tuple[list[TopCustomer], bool]:
    """The top `top` consumers over `days`, from each day's top `TOP_PER_DAY` (the
    threshold algorithm): a customer seen in some lists is bounded from below by what
    was seen and from above by adding each other list's last value; one seen nowhere by
    the sum of those last values. Exact when the chosen ones' exact totals are at least
    every bound of the rest."""
    seen: dict[str, dict[datetime, int]] = defaultdict(dict)
    floor: dict[datetime, int] = {}
    for day in days:
        listed = store.list_top_customers_of_day(conn, app_id, tracked_id, day, TOP_PER_DAY)
        for customer_id, consumed in listed:
            seen[customer_id][day] = consumed
        floor[day] = listed[-1][1] if len(listed) == TOP_PER_DAY else 0
    unseen_bound = sum(floor.values())

    def lower(customer_id: str) -> int:
        return sum(seen[customer_id].values())

    def upper(customer_id: str) -> int:
        return lower(customer_id) + sum(floor[d] for d in days if d not in seen[customer_id])

    chosen = sorted(seen, key=lambda c: (-lower(c), c))[:top]
    totals = store.map_customer_totals(conn, app_id, tracked_id, days, chosen)
    ranked = sorted(
        (TopCustomer(c, *totals.get(c, (0, 0, 0))) for c in chosen),
        key=lambda t: (-t.consumed, t.customer_id),
    )
    threshold = ranked[-1].consumed if len(ranked) == top else 0
    rest = [upper(c) for c in seen if c not in chosen]
    exact = unseen_bound <= threshold and all(bound <= threshold for bound in rest)
    if len(ranked) < top:
        exact = unseen_bound == 0
    return ranked, exact
