"""The dashboard's aggregates (docs/adr/0021): tables `usage_rollup_hours`,
`usage_rollup_customer_days`, `usage_rollup_active`, `usage_rollup_days`,
`rollup_watermarks` and `source_status_counts`.

The rollup worker (`services.rollups`) reads usage events past a watermark by their
primary key and adds them here; the dashboard's pages read only these tables. Nothing
here runs on a track.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.storage.driver_sql import (
    Sql,
    cached_sql,
    execute,
    execute_many,
    fetch_all,
    fetch_one,
    placeholders,
    time_in,
    time_out,
)

USAGE_EVENTS_STREAM = "usage_events"
SOURCE_COUNTS_STREAM = "source_counts"
"""Not a stream of rows: its `updated_at` is when access sources were last counted."""
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Watermark:
    stream: str
    position: str
    """Every row with an id up to this one (inclusive) is folded; '' : none yet."""
    folded_to: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class FoldEvent:
    """What the fold reads of one usage event."""

    id: str
    app_id: str
    customer_id: str
    tracked_id: str
    requested: int
    consumed: int
    success: bool
    error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HourRow:
    app_id: str
    tracked_id: str
    hour: datetime
    succeeded: int
    refused: int
    consumed: int
    refused_units: int


@dataclass(frozen=True, slots=True)
class CustomerDayRow:
    app_id: str
    tracked_id: str
    day: datetime
    customer_id: str
    tracks: int
    refused: int
    consumed: int


@dataclass(frozen=True, slots=True)
class SourceCountRow:
    app_id: str
    kind: str
    status: str
    sources: int
    counted_at: datetime


# -- the watermark ---------------------------------------------------------------------

_GET_WATERMARK = Sql(
    "SELECT stream, position, folded_to, updated_at FROM rollup_watermarks "
    "WHERE stream = %(stream)s"
)
_LOCK_WATERMARK = Sql(
    "SELECT stream, position, folded_to, updated_at FROM rollup_watermarks "
    "WHERE stream = %(stream)s",
    row_lock="FOR UPDATE",
)
_INSERT_WATERMARK = Sql(
    "INSERT INTO rollup_watermarks (stream, position, folded_to, updated_at) "
    "VALUES (%(stream)s, '', NULL, NULL) ON CONFLICT (stream) DO NOTHING"
)
_ADVANCE_WATERMARK = Sql(
    "UPDATE rollup_watermarks SET position = %(new)s, folded_to = %(folded_to)s, "
    "updated_at = %(now)s WHERE stream = %(stream)s AND position = %(old)s"
)
_TOUCH_WATERMARK = Sql(
    "UPDATE rollup_watermarks SET updated_at = %(now)s WHERE stream = %(stream)s"
)


def _watermark(row: Sequence[Any]) -> Watermark:
    stream, position, folded_to, updated_at = row
    return Watermark(str(stream), str(position), time_out(folded_to), time_out(updated_at))


def get_watermark(conn: Connection, stream: str) -> Watermark | None:
    row = fetch_one(conn, _GET_WATERMARK, {"stream": stream})
    return _watermark(row) if row is not None else None


def lock_watermark(conn: Connection, stream: str) -> Watermark:
    """The stream's watermark, its row locked for this transaction (created if new)."""
    row = fetch_one(conn, _LOCK_WATERMARK, {"stream": stream})
    if row is None:
        execute(conn, _INSERT_WATERMARK, {"stream": stream})
        row = fetch_one(conn, _LOCK_WATERMARK, {"stream": stream})
    if row is None:
        raise LookupError(f"no watermark row for {stream} after inserting it")
    return _watermark(row)


def insert_watermark_if_new(conn: Connection, stream: str) -> None:
    execute(conn, _INSERT_WATERMARK, {"stream": stream})


def update_watermark(
    conn: Connection, stream: str, *, old: str, new: str, folded_to: datetime, now: datetime
) -> bool:
    """Move the watermark from `old` to `new`; False if it is no longer at `old` (another
    process folded these rows first). On PostgreSQL the row stays locked until commit,
    so a concurrent fold of the same rows waits here and then finds it moved."""
    changed = execute(
        conn,
        _ADVANCE_WATERMARK,
        {
            "stream": stream,
            "old": old,
            "new": new,
            "folded_to": time_in(conn, folded_to),
            "now": time_in(conn, now),
        },
    )
    return changed == 1


def update_watermark_time(conn: Connection, stream: str, now: datetime) -> None:
    execute(conn, _TOUCH_WATERMARK, {"stream": stream, "now": time_in(conn, now)})


# -- what the fold reads ---------------------------------------------------------------

_EVENTS_AFTER = Sql(
    "SELECT id, app_id, customer_id, tracked_id, requested, consumed, success, error, "
    "created_at FROM usage_events WHERE id > %(after)s AND id < %(before)s "
    "ORDER BY id LIMIT %(limit)s"
)
_POSTGRES_HORIZON = Sql(
    "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT), "
    "(SELECT CAST(MIN(EXTRACT(EPOCH FROM xact_start)) * 1000000 AS BIGINT) "
    " FROM pg_stat_activity WHERE datname = current_database() "
    " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL)"
)


def list_events_after(conn: Connection, after: str, before: str, limit: int) -> list[FoldEvent]:
    """Usage events with `after` < id < `before`, in id order (the primary key's range)."""
    rows = fetch_all(conn, _EVENTS_AFTER, {"after": after, "before": before, "limit": limit})
    return [
        FoldEvent(
            id=r[0],
            app_id=r[1],
            customer_id=r[2],
            tracked_id=r[3],
            requested=int(r[4]),
            consumed=int(r[5]),
            success=bool(r[6]),
            error=r[7],
            created_at=_required(time_out(r[8])),
        )
        for r in rows
    ]


def find_postgres_write_horizon_micros(conn: Connection) -> int:
    """PostgreSQL: the database's clock, or the start of the oldest other transaction
    that has written (holds a transaction id), if earlier; microseconds since the epoch.
    A usage event's id is made after its transaction wrote (it locked the customer), so
    every event whose id is older than this, less the clock skew between servers, is
    committed or will never be."""
    row = fetch_one(conn, _POSTGRES_HORIZON, {})
    if row is None:
        raise LookupError("the horizon query returned no row")
    now_micros, oldest_micros = row
    return int(now_micros) if oldest_micros is None else min(int(now_micros), int(oldest_micros))


# -- what the fold writes --------------------------------------------------------------

_ADD_HOUR = Sql(
    "INSERT INTO usage_rollup_hours "
    "(app_id, tracked_id, hour, succeeded, refused, consumed, refused_units) VALUES "
    "(%(app_id)s, %(tracked_id)s, %(hour)s, %(succeeded)s, %(refused)s, %(consumed)s, "
    "%(refused_units)s) ON CONFLICT (app_id, tracked_id, hour) DO UPDATE SET "
    "succeeded = usage_rollup_hours.succeeded + excluded.succeeded, "
    "refused = usage_rollup_hours.refused + excluded.refused, "
    "consumed = usage_rollup_hours.consumed + excluded.consumed, "
    "refused_units = usage_rollup_hours.refused_units + excluded.refused_units"
)
_ADD_CUSTOMER_DAY = Sql(
    "INSERT INTO usage_rollup_customer_days "
    "(app_id, tracked_id, day, customer_id, tracks, refused, consumed) VALUES "
    "(%(app_id)s, %(tracked_id)s, %(day)s, %(customer_id)s, %(tracks)s, %(refused)s, "
    "%(consumed)s) ON CONFLICT (app_id, tracked_id, day, customer_id) DO UPDATE SET "
    "tracks = usage_rollup_customer_days.tracks + excluded.tracks, "
    "refused = usage_rollup_customer_days.refused + excluded.refused, "
    "consumed = usage_rollup_customer_days.consumed + excluded.consumed"
)
_INSERT_ACTIVE = Sql(
    "INSERT INTO usage_rollup_active (app_id, day, customer_id) "
    "VALUES (%(app_id)s, %(day)s, %(customer_id)s)"
)
_ADD_ACTIVE_COUNT = Sql(
    "INSERT INTO usage_rollup_days (app_id, day, active_customers) "
    "VALUES (%(app_id)s, %(day)s, %(count)s) ON CONFLICT (app_id, day) DO UPDATE SET "
    "active_customers = usage_rollup_days.active_customers + excluded.active_customers"
)


def add_hours(conn: Connection, rows: Iterable[HourRow]) -> None:
    execute_many(
        conn,
        _ADD_HOUR,
        [
            {
                "app_id": r.app_id,
                "tracked_id": r.tracked_id,
                "hour": time_in(conn, r.hour),
                "succeeded": r.succeeded,
                "refused": r.refused,
                "consumed": r.consumed,
                "refused_units": r.refused_units,
            }
            for r in rows
        ],
    )


def add_customer_days(conn: Connection, rows: Iterable[CustomerDayRow]) -> None:
    execute_many(
        conn,
        _ADD_CUSTOMER_DAY,
        [
            {
                "app_id": r.app_id,
                "tracked_id": r.tracked_id,
                "day": time_in(conn, r.day),
                "customer_id": r.customer_id,
                "tracks": r.tracks,
                "refused": r.refused,
                "consumed": r.consumed,
            }
            for r in rows
        ],
    )


def insert_active_customers(
    conn: Connection, active: Mapping[tuple[str, datetime], set[str]]
) -> dict[tuple[str, datetime], int]:
    """Record who was active on which (app, day); how many of them are new per (app, day)
    (already recorded ones are left alone)."""
    added: dict[tuple[str, datetime], int] = {}
    for (app_id, day), customer_ids in active.items():
        day_value = time_in(conn, day)
        wanted = sorted(customer_ids)
        known: set[str] = set()
        for start in range(0, len(wanted), _IN_CHUNK):
            listed, params = placeholders("c", wanted[start : start + _IN_CHUNK])
            sql = cached_sql(
                "SELECT customer_id FROM usage_rollup_active WHERE app_id = %(app_id)s "
                f"AND day = %(day)s AND customer_id IN ({listed})"
            )
            rows = fetch_all(conn, sql, {"app_id": app_id, "day": day_value, **params})
            known.update(r[0] for r in rows)
        new = [c for c in wanted if c not in known]
        execute_many(
            conn,
            _INSERT_ACTIVE,
            [{"app_id": app_id, "day": day_value, "customer_id": c} for c in new],
        )
        if new:
            added[(app_id, day)] = len(new)
    execute_many(
        conn,
        _ADD_ACTIVE_COUNT,
        [
            {"app_id": app_id, "day": time_in(conn, day), "count": count}
            for (app_id, day), count in added.items()
        ],
    )
    return added


# -- access sources by status ------------------------------------------------------------

_LIST_APP_IDS = Sql("SELECT id FROM apps ORDER BY id")
_COUNT_SOURCES = Sql(
    "SELECT kind, status, COUNT(*) FROM access_sources WHERE app_id = %(app_id)s "
    "GROUP BY kind, status"
)
_DELETE_SOURCE_COUNTS = Sql("DELETE FROM source_status_counts")
_INSERT_SOURCE_COUNT = Sql(
    "INSERT INTO source_status_counts (app_id, kind, status, sources, counted_at) "
    "VALUES (%(app_id)s, %(kind)s, %(status)s, %(sources)s, %(counted_at)s)"
)
_LIST_SOURCE_COUNTS = Sql(
    "SELECT app_id, kind, status, sources, counted_at FROM source_status_counts "
    "WHERE app_id = %(app_id)s ORDER BY kind, status"
)


def list_counted_sources(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(app id, kind, status, sources) of every app, each app's counted from the index
    `(app_id, kind, status)`: the worker's, never a page's (it reads every entry)."""
    counts: list[tuple[str, str, str, int]] = []
    for (app_id,) in fetch_all(conn, _LIST_APP_IDS, {}):
        rows = fetch_all(conn, _COUNT_SOURCES, {"app_id": app_id})
        counts.extend((app_id, k, s, int(n)) for k, s, n in rows)
    return counts


def save_source_counts(
    conn: Connection, counts: Sequence[tuple[str, str, str, int]], counted_at: datetime
) -> None:
    """Replace every app's counts by `counts`."""
    execute(conn, _DELETE_SOURCE_COUNTS, {})
    at = time_in(conn, counted_at)
    execute_many(
        conn,
        _INSERT_SOURCE_COUNT,
        [
            {"app_id": a, "kind": k, "status": s, "sources": n, "counted_at": at}
            for a, k, s, n in counts
        ],
    )


def list_source_counts(conn: Connection, app_id: str) -> list[SourceCountRow]:
    rows = fetch_all(conn, _LIST_SOURCE_COUNTS, {"app_id": app_id})
    return [SourceCountRow(a, k, s, int(n), _required(time_out(at))) for a, k, s, n, at in rows]


# -- what the pages read -----------------------------------------------------------------

_HOUR_COLUMNS = "app_id, tracked_id, hour, succeeded, refused, consumed, refused_units"
_LIST_APP_HOURS = Sql(
    f"SELECT {_HOUR_COLUMNS} FROM usage_rollup_hours WHERE app_id = %(app_id)s "
    "AND hour >= %(since)s AND hour < %(until)s"
)
_LIST_TRACKED_HOURS = Sql(
    f"SELECT {_HOUR_COLUMNS} FROM usage_rollup_hours WHERE app_id = %(app_id)s "
    "AND tracked_id = %(tracked_id)s AND hour >= %(since)s AND hour < %(until)s ORDER BY hour"
)
_LIST_ACTIVE_DAYS = Sql(
    "SELECT day, active_customers FROM usage_rollup_days WHERE app_id = %(app_id)s "
    "AND day >= %(since)s AND day < %(until)s ORDER BY day"
)
_LIST_TOP_OF_DAY = Sql(
    "SELECT customer_id, consumed FROM usage_rollup_customer_days "
    "WHERE app_id = %(app_id)s AND tracked_id = %(tracked_id)s AND day = %(day)s "
    "ORDER BY consumed DESC LIMIT %(limit)s"
)
_LIST_TRACKED_IDS = Sql(
    "SELECT DISTINCT tracked_id FROM usage_rollup_hours WHERE app_id = %(app_id)s "
    "AND hour >= %(since)s AND hour < %(until)s"
)


def _hour_row(r: Sequence[Any]) -> HourRow:
    return HourRow(
        app_id=r[0],
        tracked_id=r[1],
        hour=_required(time_out(r[2])),
        succeeded=int(r[3]),
        refused=int(r[4]),
        consumed=int(r[5]),
        refused_units=int(r[6]),
    )


def list_app_hours(
    conn: Connection, app_id: str, since: datetime, until: datetime
) -> list[HourRow]:
    """Every tracked id's hours of an app in [since, until)."""
    params = {"app_id": app_id, "since": time_in(conn, since), "until": time_in(conn, until)}
    return [_hour_row(r) for r in fetch_all(conn, _LIST_APP_HOURS, params)]


def list_tracked_hours(
    conn: Connection, app_id: str, tracked_id: str, since: datetime, until: datetime
) -> list[HourRow]:
    """One tracked id's hours in [since, until), oldest first."""
    params = {
        "app_id": app_id,
        "tracked_id": tracked_id,
        "since": time_in(conn, since),
        "until": time_in(conn, until),
    }
    return [_hour_row(r) for r in fetch_all(conn, _LIST_TRACKED_HOURS, params)]


def list_active_days(
    conn: Connection, app_id: str, since: datetime, until: datetime
) -> list[tuple[datetime, int]]:
    params = {"app_id": app_id, "since": time_in(conn, since), "until": time_in(conn, until)}
    return [
        (_required(time_out(day)), int(n)) for day, n in fetch_all(conn, _LIST_ACTIVE_DAYS, params)
    ]


def list_top_customers_of_day(
    conn: Connection, app_id: str, tracked_id: str, day: datetime, limit: int
) -> list[tuple[str, int]]:
    """(customer id, consumed) of a UTC day's biggest consumers, biggest first."""
    params = {
        "app_id": app_id,
        "tracked_id": tracked_id,
        "day": time_in(conn, day),
        "limit": limit,
    }
    return [(c, int(n)) for c, n in fetch_all(conn, _LIST_TOP_OF_DAY, params)]


def map_customer_totals(
    conn: Connection,
    app_id: str,
    tracked_id: str,
    days: Sequence[datetime],
    customer_ids: Sequence[str],
) -> dict[str, tuple[int, int, int]]:
    """(consumed, tracks, refused) per customer over the given days: one primary-key
    lookup per (day, customer)."""
    if not days or not customer_ids:
        return {}
    day_list, day_params = placeholders("d", [time_in(conn, d) for d in days])
    customer_list, customer_params = placeholders("c", customer_ids)
    sql = cached_sql(
        "SELECT customer_id, SUM(consumed), SUM(tracks), SUM(refused) "
        "FROM usage_rollup_customer_days WHERE app_id = %(app_id)s "
        f"AND tracked_id = %(tracked_id)s AND day IN ({day_list}) "
        f"AND customer_id IN ({customer_list}) GROUP BY customer_id"
    )
    params = {"app_id": app_id, "tracked_id": tracked_id, **day_params, **customer_params}
    return {c: (int(a), int(b), int(d)) for c, a, b, d in fetch_all(conn, sql, params)}


def list_tracked_ids(conn: Connection, app_id: str, since: datetime, until: datetime) -> list[str]:
    """The ids tracked in [since, until) (for the analytics page's picker)."""
    params = {"app_id": app_id, "since": time_in(conn, since), "until": time_in(conn, until)}
    return sorted(r[0] for r in fetch_all(conn, _LIST_TRACKED_IDS, params))


def _required(moment: datetime | None) -> datetime:
    if moment is None:
        raise ValueError("a NOT NULL time column read as NULL")
    return moment
