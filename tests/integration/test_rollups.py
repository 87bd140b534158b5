"""The dashboard's usage rollups (docs/adr/0021): folded exactly once, equal to the sums
over usage events, resumed from the watermark, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

import revenipe
from revenipe.services import rollups
from revenipe.services.context import ServiceContext, new_id
from revenipe.storage import rollups as rollup_store
from revenipe.storage.database import open_database
from revenipe.storage.schema import (
    customers,
    usage_events,
    usage_rollup_customer_days,
    usage_rollup_days,
    usage_rollup_hours,
)

from support import Clock, assert_verified

NO_MARGIN = timedelta(0)
"""One machine: the test's servers and database share a clock."""


def fold_all(ctx: ServiceContext, batch: int = rollups.FOLD_BATCH) -> int:
    return rollups.fold_all(ctx, batch=batch, margin=NO_MARGIN)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def direct_hours(ctx: ServiceContext, app_id: str) -> dict[tuple[str, datetime], tuple[int, ...]]:
    """What the rollups must hold, summed straight from the usage events."""
    sums: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    with ctx.db.read() as conn:
        rows = conn.execute(select(usage_events).where(usage_events.c.app_id == app_id)).all()
    for r in rows:
        tracked = "?" if r.error == "unknown_entitlement" else r.tracked_id
        s = sums[(tracked, _hour(r.created_at))]
        if r.success:
            s[0] += 1
            s[2] += r.consumed
        else:
            s[1] += 1
            s[3] += r.requested
    return {k: tuple(v) for k, v in sums.items()}


def rolled_hours(ctx: ServiceContext, app_id: str) -> dict[tuple[str, datetime], tuple[int, ...]]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(usage_rollup_hours).where(usage_rollup_hours.c.app_id == app_id)
        ).all()
    return {
        (r.tracked_id, r.hour): (r.succeeded, r.refused, r.consumed, r.refused_units) for r in rows
    }


def direct_customer_days(ctx: ServiceContext, app_id: str) -> dict[tuple[str, str], int]:
    sums: Counter[tuple[str, str]] = Counter()
    with ctx.db.read() as conn:
        for r in conn.execute(select(usage_events).where(usage_events.c.app_id == app_id)):
            sums[(r.tracked_id, r.customer_id)] += r.consumed
    return {k: v for k, v in sums.items() if v}


def rolled_customer_days(ctx: ServiceContext, app_id: str) -> dict[tuple[str, str], int]:
    sums: Counter[tuple[str, str]] = Counter()
    with ctx.db.read() as conn:
        for r in conn.execute(
            select(usage_rollup_customer_days).where(usage_rollup_customer_days.c.app_id == app_id)
        ):
            sums[(r.tracked_id, r.customer_id)] += r.consumed
    return {k: v for k, v in sums.items() if v}


def active_per_day(ctx: ServiceContext, app_id: str) -> dict[datetime, int]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(usage_rollup_days).where(usage_rollup_days.c.app_id == app_id)
        ).all()
    return {r.day: r.active_customers for r in rows}


def some_usage(app: revenipe.App, clock: Clock, customers: int = 4) -> None:
    """Tracks at three hours over two days: successes, refusals (insufficient, unknown id)."""
    for _ in range(3):
        for n in range(customers):
            app.track(f"cust-{n}", "credits", n + 1)
            app.track(f"cust-{n}", "monthly_credits", 1)
        app.track("cust-0", "credits", 10_000)  # refused: insufficient balance
        app.track("cust-1", "no_such_id", 3)  # refused: unknown id, counted under "?"
        clock.advance(hours=7)


def test_fold_equals_the_sums_over_usage_events(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    some_usage(app, clock)
    ctx = backend.context
    assert fold_all(ctx) >= 3 * (4 * 2 + 2)
    expected = direct_hours(ctx, app.app_id)
    assert rolled_hours(ctx, app.app_id) == expected
    assert {t for t, _ in expected} == {"credits", "monthly_credits", "?"}
    assert sum(v[1] for v in expected.values()) == 6  # the refusals were recorded
    assert rolled_customer_days(ctx, app.app_id) == direct_customer_days(ctx, app.app_id)
    # Hours 12:00, 19:00 (31 Jan) and 02:00 (1 Feb): four customers each day.
    assert active_per_day(ctx, app.app_id) == {
        datetime(2026, 1, 31, tzinfo=UTC): 4,
        datetime(2026, 2, 1, tzinfo=UTC): 4,
    }
    # Folding again adds nothing.
    assert fold_all(ctx) == 0
    assert rolled_hours(ctx, app.app_id) == expected


def test_resumes_from_the_watermark_after_a_restart(
    database_url: str, backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    some_usage(app, clock, customers=3)
    # Small batches: the watermark moves many times, never past an event it did not add.
    assert fold_all(backend.context, batch=4) > 0
    some_usage(app, clock, customers=2)
    with revenipe.open(database_url, clock=clock) as restarted:
        fold_all(restarted.context, batch=3)
        assert rolled_hours(restarted.context, app.app_id) == direct_hours(
            restarted.context, app.app_id
        )
        assert rolled_customer_days(restarted.context, app.app_id) == direct_customer_days(
            restarted.context, app.app_id
        )
        with restarted.database.read() as conn:
            mark = rollup_store.get_watermark(conn, rollup_store.USAGE_EVENTS_STREAM)
        assert mark is not None and mark.position.startswith("use_")


def test_concurrent_folders_add_each_event_once(
    database_url: str, backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    """Folders on their own database handles (as separate server processes have), each
    folding in small batches while customers track: every event counted once."""
    folders = [ServiceContext(db=open_database(database_url), clock=clock) for _ in range(3)]
    stop = threading.Event()
    races: list[int] = []
    errors: list[BaseException] = []

    def fold_loop(ctx: ServiceContext) -> None:
        try:
            while not stop.is_set():
                result = rollups.fold_usage(ctx, batch=7, margin=NO_MARGIN)
                races.append(int(result.lost_race))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def track_loop(n: int) -> None:
        try:
            for i in range(40):
                app.track(f"racer-{n}", "credits", 1 + i % 3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fold_loop, args=(c,)) for c in folders]
    trackers = [threading.Thread(target=track_loop, args=(n,)) for n in range(3)]
    for t in threads + trackers:
        t.start()
    for t in trackers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    for ctx in folders:
        ctx.db.close()
    assert not errors, errors
    fold_all(backend.context)
    expected = direct_hours(backend.context, app.app_id)
    assert sum(v[0] for v in expected.values()) == 120
    assert rolled_hours(backend.context, app.app_id) == expected
    assert rolled_customer_days(backend.context, app.app_id) == direct_customer_days(
        backend.context, app.app_id
    )
    assert sum(active_per_day(backend.context, app.app_id).values()) == 3


def test_overview_and_analytics_read_the_rollups(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    some_usage(app, clock)
    ctx = backend.context
    zone = UTC
    empty = rollups.overview(ctx, app.app_id, days=7, zone=zone)
    assert sum(d.succeeded for d in empty.days) == 0  # nothing folded yet
    fold_all(ctx)
    assert rollups.count_sources(ctx)
    view = rollups.overview(ctx, app.app_id, days=7, zone=zone)
    assert len(view.days) == 7 and view.days[-1].day == clock.now.date()
    assert sum(d.succeeded for d in view.days) == 24
    assert sum(d.refused for d in view.days) == 6
    assert view.top_keys[0].tracked_id == "credits"
    assert view.top_keys[0].consumed == 3 * (1 + 2 + 3 + 4)
    # Every customer holds the free tier (a default source) after their first track.
    assert [(s.kind, s.status, s.sources) for s in view.sources] == [("default", "active", 4)]
    assert view.folded_to is not None

    since = _hour(clock.now) - timedelta(hours=24)
    hourly = rollups.usage_analytics(
        ctx,
        app.app_id,
        "credits",
        granularity="hour",
        since=since,
        until=since + timedelta(hours=25),
        zone=zone,
    )
    assert len(hourly.buckets) == 25
    assert sum(b.consumed for b in hourly.buckets) == 30
    assert sum(b.refused for b in hourly.buckets) == 3
    assert sum(b.refused_units for b in hourly.buckets) == 30_000
    assert hourly.top_customers[0].consumed == 12
    assert hourly.top_exact
    assert "credits" in hourly.tracked_ids and "?" in hourly.tracked_ids
    daily = rollups.usage_analytics(
        ctx,
        app.app_id,
        "monthly_credits",
        granularity="day",
        since=since,
        until=since + timedelta(days=2),
        zone=zone,
    )
    assert sum(b.consumed for b in daily.buckets) == 12
    assert sum(b.succeeded for b in daily.buckets) == 12


def test_top_customers_are_exact_or_say_so(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the top 2 of each day read, the top 2 over three days are still found
    exactly when the bounds prove it, and flagged when they cannot."""
    monkeypatch.setattr(rollups, "TOP_PER_DAY", 2)
    day_one = {"a": 9, "b": 8, "c": 7}
    day_two = {"c": 9, "b": 8, "a": 1}
    day_three = {"c": 9, "a": 8, "b": 1}
    for usage in (day_one, day_two, day_three):
        for customer, value in usage.items():
            app.grant_entitlement(customer, "purchased_credits", value)
            app.track(customer, "purchased_credits", value)
        clock.advance(days=1)
    ctx = backend.context
    fold_all(ctx)
    since = datetime(2026, 1, 31, tzinfo=UTC)

    def top(count: int) -> rollups.Analytics:
        return rollups.usage_analytics(
            ctx,
            app.app_id,
            "purchased_credits",
            granularity="day",
            since=since,
            until=since + timedelta(days=3),
            zone=UTC,
            top=count,
        )

    names = {app.login(n): n for n in "abc"}
    one = top(1)
    # c: 7 + 9 + 9 = 25 (its 7 on day one is below that day's top 2, read exactly).
    assert [(names[t.customer_id], t.consumed) for t in one.top_customers] == [("c", 25)]
    # The others' bounds: a <= 9 + 8 + 8 = 25, b <= 8 + 8 + 8 = 24, unseen <= 24.
    assert one.top_exact
    three = top(3)
    assert [(names[t.customer_id], t.consumed) for t in three.top_customers] == [
        ("c", 25),
        ("a", 18),
        ("b", 17),
    ]
    # Each day's list stopped at 8, so someone seen nowhere might hold 8 + 8 + 8 = 24,
    # more than b's 17: the page must say the list may be incomplete.
    assert three.top_exact is False


def test_an_event_committed_late_is_not_passed_by_the_watermark(
    database_url: str, backend: revenipe.Backend, app: revenipe.App
) -> None:
    """A transaction that made a usage event's id and has not committed yet: the fold
    must not move the watermark past that id (PostgreSQL: the horizon is the oldest
    writing transaction's start; SQLite: the fold waits for the write lock)."""
    customer_id = app.login("late")
    other = open_database(database_url)
    inserted = threading.Event()
    release = threading.Event()
    made: list[str] = []
    errors: list[BaseException] = []

    def late_writer() -> None:
        try:
            with other.write() as conn:
                # As a track does: lock the customer, then make the event's id.
                conn.execute(
                    select(customers.c.id).where(customers.c.id == customer_id).with_for_update()
                )
                event_id = new_id("use")
                made.append(event_id)
                conn.execute(
                    usage_events.insert().values(
                        id=event_id,
                        app_id=app.app_id,
                        customer_id=customer_id,
                        tracked_id="credits",
                        # A refusal: it has no ledger entries, so the shared
                        # database still passes `revenipe verify`.
                        requested=5,
                        consumed=0,
                        reversed=0,
                        remaining=0,
                        success=False,
                        error="insufficient_balance",
                        created_at=backend.context.now(),
                    )
                )
                inserted.set()
                release.wait(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=late_writer)
    writer.start()
    assert inserted.wait(timeout=10)
    if backend.database.is_sqlite:
        # The fold's horizon needs the write lock: it waits for the writer to commit.
        threading.Timer(0.3, release.set).start()
        rollups.fold_usage(backend.context, margin=NO_MARGIN)
    else:
        rollups.fold_usage(backend.context, margin=NO_MARGIN)
        with backend.database.read() as conn:
            mark = rollup_store.get_watermark(conn, rollup_store.USAGE_EVENTS_STREAM)
        assert mark is not None and mark.position < made[0]
        release.set()
    writer.join()
    other.close()
    assert not errors, errors
    fold_all(backend.context)
    expected = direct_hours(backend.context, app.app_id)
    assert sum(v[3] for v in expected.values()) == 5  # the late refusal's units
    assert rolled_hours(backend.context, app.app_id) == expected
    assert_verified(backend)
