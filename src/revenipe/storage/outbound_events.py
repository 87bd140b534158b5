"""The outbound event outbox and its deliveries: tables `outbound_events`,
`webhook_deliveries`, `webhook_attempts`, and `customer_signals` (what usage alerts
remember per customer). docs/adr/0019.

Events and their deliveries are inserted in the transaction of the change that causes
them. The delivery worker claims due deliveries with `claim_due_deliveries` (``FOR
UPDATE SKIP LOCKED`` on PostgreSQL, so that servers sharing a database never claim the
same one; SQLite's writers take turns anyway), pushing each one's next attempt past a
lease, commits, sends, and records the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.storage.driver_sql import (
    Columns,
    Sql,
    cached_sql,
    execute,
    execute_many,
    fetch_all,
    fetch_one,
    fetch_scalar,
    placeholders,
    time_in,
)
from revenipe.storage.schema import (
    customer_signals,
    outbound_events,
    webhook_attempts,
    webhook_deliveries,
)
from revenipe.storage.webhook_endpoints import Subscription, subscription

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
"""Given up (the endpoint was disabled or deleted, or the retries ran out)."""


@dataclass(frozen=True, slots=True)
class OutboundEventRow:
    seq: int
    id: str
    app_id: str
    customer_id: str | None
    customer_seq: int | None
    type: str
    body: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    app_id: str
    endpoint_id: str
    event_seq: int
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    delivery_id: str
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


_EVENT = Columns(
    outbound_events,
    ("seq", "id", "app_id", "customer_id", "customer_seq", "type", "body", "created_at"),
)
_NEW_EVENT = Columns(
    outbound_events,
    ("id", "app_id", "customer_id", "customer_seq", "type", "body", "created_at"),
)
_DELIVERY = Columns(
    webhook_deliveries,
    (
        "id",
        "app_id",
        "endpoint_id",
        "event_seq",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    ),
)
_ATTEMPT = Columns(
    webhook_attempts,
    ("id", "delivery_id", "attempted_at", "status_code", "latency_ms", "response_excerpt", "error"),
)
_NEW_ATTEMPT = Columns(
    webhook_attempts,
    ("delivery_id", "attempted_at", "status_code", "latency_ms", "response_excerpt", "error"),
)
_SIGNAL = Columns(customer_signals, ("customer_id", "target_id", "signal", "at"))

_INSERT_EVENT = _NEW_EVENT.insert("RETURNING seq")
_LAST_CUSTOMER_SEQ = Sql(
    "SELECT MAX(customer_seq) FROM outbound_events WHERE customer_id = %(customer_id)s"
)
_LIST_EVENTS = Sql(
    f"SELECT {_EVENT.select} FROM outbound_events WHERE app_id = %(app_id)s "
    "AND seq > %(after)s AND seq <= %(final)s ORDER BY seq LIMIT %(limit)s"
)
_LAST_SEQ = Sql("SELECT MAX(seq) FROM outbound_events WHERE app_id = %(app_id)s")
_EVENT_WRITERS = Sql(
    "SELECT DISTINCT virtualtransaction FROM pg_locks "
    "WHERE relation = 'outbound_events'::regclass AND mode = 'RowExclusiveLock' "
    "AND pid IS DISTINCT FROM pg_backend_pid() "
    # Relation ids are unique per database only: a database made from a template that
    # held the tables shares them with its siblings on the same server.
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_GET_EVENT_BY_SEQ = Sql(f"SELECT {_EVENT.select} FROM outbound_events WHERE seq = %(seq)s")
_INSERT_DELIVERY = _DELIVERY.insert()
_GET_DELIVERY = Sql(
    f"SELECT {_DELIVERY.select} FROM webhook_deliveries WHERE id = %(id)s AND app_id = %(app_id)s"
)
_LIST_DELIVERIES = Sql(
    f"SELECT {_DELIVERY.select} FROM webhook_deliveries WHERE endpoint_id = %(endpoint_id)s "
    "AND id < %(before)s ORDER BY id DESC LIMIT %(limit)s"
)
_DUE = Sql(
    f"SELECT {_DELIVERY.select} FROM webhook_deliveries WHERE status = 'pending' "
    "AND next_attempt_at <= %(now)s ORDER BY next_attempt_at LIMIT %(limit)s",
    row_lock="FOR UPDATE SKIP LOCKED",
)
_ANY_DUE = Sql(
    "SELECT id FROM webhook_deliveries WHERE status = 'pending' "
    "AND next_attempt_at <= %(now)s LIMIT 1"
)
_LEASE = Sql(
    "UPDATE webhook_deliveries SET next_attempt_at = %(until)s, attempts = attempts + 1 "
    "WHERE id = %(id)s"
)
_FINISH = Sql(
    "UPDATE webhook_deliveries SET status = %(status)s, next_attempt_at = %(next_attempt_at)s, "
    "last_status_code = %(last_status_code)s, last_error = %(last_error)s, "
    "delivered_at = %(delivered_at)s WHERE id = %(id)s AND status = 'pending'"
)
_REDELIVER = Sql(
    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = %(now)s WHERE id = %(id)s"
)
_INSERT_ATTEMPT = _NEW_ATTEMPT.insert()
_LIST_ATTEMPTS_PREFIX = f"SELECT {_ATTEMPT.select} FROM webhook_attempts WHERE delivery_id IN "
_DELETE_ATTEMPTS_OF_ENDPOINT = Sql(
    "DELETE FROM webhook_attempts WHERE delivery_id IN "
    "(SELECT id FROM webhook_deliveries WHERE endpoint_id = %(endpoint_id)s)"
)
_DELETE_DELIVERIES_OF_ENDPOINT = Sql(
    "DELETE FROM webhook_deliveries WHERE endpoint_id = %(endpoint_id)s"
)
_LIST_SIGNALS_PREFIX = (
    f"SELECT {_SIGNAL.select} FROM customer_signals WHERE customer_id = %(customer_id)s "
    "AND target_id IN "
)
_INSERT_SIGNAL = _SIGNAL.insert()
_UPSERT_SIGNAL = _SIGNAL.insert(
    "ON CONFLICT (customer_id, target_id, signal) DO UPDATE SET at = excluded.at"
)
_DELETE_SIGNAL = Sql(
    "DELETE FROM customer_signals WHERE customer_id = %(customer_id)s "
    "AND target_id = %(target_id)s AND signal = %(signal)s"
)
_GET_SIGNAL = Sql(
    f"SELECT {_SIGNAL.select} FROM customer_signals WHERE customer_id = %(customer_id)s "
    "AND target_id = %(target_id)s AND signal = %(signal)s"
)


# -- events ------------------------------------------------------------------------------


def next_customer_seq(conn: Connection, customer_id: str) -> int:
    """The customer's next event sequence number (the caller holds the customer's lock)."""
    last = fetch_scalar(conn, _LAST_CUSTOMER_SEQ, {"customer_id": customer_id})
    return int(last or 0) + 1


def insert_event(
    conn: Connection,
    *,
    event_id: str,
    app_id: str,
    customer_id: str | None,
    customer_seq: int | None,
    event_type: str,
    body: str,
    now: datetime,
) -> int:
    """Append an event to the outbox; its `seq` (the order of `GET /v1/events`)."""
    values = {
        "id": event_id,
        "app_id": app_id,
        "customer_id": customer_id,
        "customer_seq": customer_seq,
        "type": event_type,
        "body": body,
        "created_at": now,
    }
    row = fetch_one(conn, _INSERT_EVENT, _NEW_EVENT.encode(conn, values))
    if row is None:
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return int(row[0])


def list_events(
    conn: Connection, app_id: str, *, after: int, final: int, limit: int
) -> list[OutboundEventRow]:
    """The app's events after the cursor `after` up to `final` (`events_in_flight`, in
    an earlier transaction), oldest first."""
    params = {"app_id": app_id, "after": after, "final": final, "limit": limit}
    return [OutboundEventRow(**_EVENT.read(r)) for r in fetch_all(conn, _LIST_EVENTS, params)]


def events_in_flight(conn: Connection, app_id: str) -> tuple[int | None, set[str]]:
    """The app's newest event visible now (None: no events), and the transactions
    writing events at this moment (PostgreSQL; SQLite: none).

    `seq` is drawn at insert, so on PostgreSQL a transaction can commit an event after
    another one committed a higher `seq`: a reader between the two commits would page
    past the lower one and never see it. Once every transaction returned here has
    ended (`event_writers_left`), every `seq` up to the newest one is committed or
    never will be, and a transaction begun after that sees all of them:
    - an insert takes `outbound_events` for writing (`RowExclusiveLock`, held to the
      end of its transaction) before its column default draws a `seq`; a transaction
      that still holds a lower `seq` than the newest visible one holds that lock;
    - the newest `seq` is read first, the lock holders after it (the other way round,
      a writer could draw a lower `seq` between the two reads and be missed);
    - a transaction that takes the lock later draws higher `seq`s only (the sequence
      hands them out in order: it caches none, `CACHE 1`, its default);
    - a prepared transaction (two-phase commit) holds its locks with no `pid`.

    SQLite commits one writer at a time, each `seq` drawn inside its writer's turn: its
    events are always committed in `seq` order."""
    last = fetch_scalar(conn, _LAST_SEQ, {"app_id": app_id})
    if last is None:
        return None, set()
    return int(last), event_writers_left(conn, None)


def event_writers_left(conn: Connection, writers: set[str] | None) -> set[str]:
    """Which of `writers` (virtual transaction ids; None: any) still write events."""
    if conn.dialect.name == "sqlite" or writers == set():
        return set()
    now = {row[0] for row in fetch_all(conn, _EVENT_WRITERS, {})}
    return now if writers is None else writers & now


def get_event_by_seq(conn: Connection, seq: int) -> OutboundEventRow | None:
    row = fetch_one(conn, _GET_EVENT_BY_SEQ, {"seq": seq})
    return OutboundEventRow(**_EVENT.read(row)) if row is not None else None


# -- deliveries --------------------------------------------------------------------------


def insert_deliveries(conn: Connection, rows: Sequence[DeliveryRow]) -> None:
    execute_many(conn, _INSERT_DELIVERY, [_DELIVERY.params(conn, r) for r in rows])


def get_delivery(conn: Connection, app_id: str, delivery_id: str) -> DeliveryRow | None:
    row = fetch_one(conn, _GET_DELIVERY, {"id": delivery_id, "app_id": app_id})
    return DeliveryRow(**_DELIVERY.read(row)) if row is not None else None


def list_deliveries(
    conn: Connection, endpoint_id: str, *, before_id: str | None, limit: int
) -> list[DeliveryRow]:
    """An endpoint's deliveries, newest first."""
    params = {"endpoint_id": endpoint_id, "before": before_id or "~", "limit": limit}
    return [DeliveryRow(**_DELIVERY.read(r)) for r in fetch_all(conn, _LIST_DELIVERIES, params)]


def has_due_delivery(conn: Connection, now: datetime) -> bool:
    return fetch_one(conn, _ANY_DUE, {"now": time_in(conn, now)}) is not None


def claim_due_deliveries(
    conn: Connection, now: datetime, lease_until: datetime, limit: int
) -> list[DeliveryRow]:
    """Take up to `limit` due deliveries for this worker: each one's next attempt moves
    to `lease_until` (if this worker dies, another retries it then) and its attempt count
    grows by one. Rows another transaction holds are skipped, not waited for."""
    rows = [
        DeliveryRow(**_DELIVERY.read(r))
        for r in fetch_all(conn, _DUE, {"now": time_in(conn, now), "limit": limit})
    ]
    until = time_in(conn, lease_until)
    execute_many(conn, _LEASE, [{"id": r.id, "until": until} for r in rows])
    return rows


def update_delivery_outcome(
    conn: Connection,
    delivery_id: str,
    *,
    status: str,
    next_attempt_at: datetime | None,
    last_status_code: int | None,
    last_error: str | None,
    delivered_at: datetime | None,
) -> bool:
    """Record an attempt's outcome on a pending delivery (False: it is no longer pending)."""
    params = {
        "id": delivery_id,
        "status": status,
        "next_attempt_at": time_in(conn, next_attempt_at),
        "last_status_code": last_status_code,
        "last_error": last_error,
        "delivered_at": time_in(conn, delivered_at),
    }
    return execute(conn, _FINISH, params) > 0


def update_delivery_redeliver(conn: Connection, delivery_id: str, now: datetime) -> None:
    """Make a delivery pending again, due now (whatever its status was)."""
    execute(conn, _REDELIVER, {"id": delivery_id, "now": time_in(conn, now)})


def insert_attempt(
    conn: Connection,
    delivery_id: str,
    *,
    attempted_at: datetime,
    status_code: int | None,
    latency_ms: int,
    response_excerpt: str | None,
    error: str | None,
) -> None:
    values = {
        "delivery_id": delivery_id,
        "attempted_at": attempted_at,
        "status_code": status_code,
        "latency_ms": latency_ms,
        "response_excerpt": response_excerpt,
        "error": error,
    }
    execute(conn, _INSERT_ATTEMPT, _NEW_ATTEMPT.encode(conn, values))


def map_attempts(conn: Connection, delivery_ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
    """The attempts of these deliveries, oldest first, by delivery id."""
    listed, params = placeholders("d", delivery_ids)
    found: dict[str, list[AttemptRow]] = {d: [] for d in delivery_ids}
    if not params:
        return found
    sql = cached_sql(f"{_LIST_ATTEMPTS_PREFIX}({listed}) ORDER BY id")
    for r in fetch_all(conn, sql, params):
        row = AttemptRow(**_ATTEMPT.read(r))
        found[row.delivery_id].append(row)
    return found


_LOCK_DELIVERY = Sql("SELECT id FROM webhook_deliveries WHERE id = %(id)s", row_lock="FOR UPDATE")
_LOCK_DELIVERIES_OF_ENDPOINT = Sql(
    "SELECT id FROM webhook_deliveries WHERE endpoint_id = %(endpoint_id)s ORDER BY id",
    row_lock="FOR UPDATE",
)


def lock_delivery(conn: Connection, delivery_id: str) -> bool:
    """Lock a delivery's row before recording an attempt; False if it was deleted."""
    return fetch_one(conn, _LOCK_DELIVERY, {"id": delivery_id}) is not None


def delete_deliveries_of_endpoint(conn: Connection, endpoint_id: str) -> None:
    """Delete an endpoint's deliveries and attempts; their rows are locked first, so a
    worker recording an attempt meanwhile either finishes first or finds them gone."""
    params = {"endpoint_id": endpoint_id}
    fetch_all(conn, _LOCK_DELIVERIES_OF_ENDPOINT, params)
    execute(conn, _DELETE_ATTEMPTS_OF_ENDPOINT, params)
    execute(conn, _DELETE_DELIVERIES_OF_ENDPOINT, params)


# -- what alerts remember per customer ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertView:
    """What evaluating a customer's usage alerts reads, in one round trip."""

    subscriptions: list[Subscription]
    balances: dict[str, tuple[int, int]]
    """Entitlement id -> (remaining, granted) over the grants that pay now."""
    crossed: dict[str, set[str]]
    """Target id -> the signals remembered (thresholds crossed, `refused`)."""


def read_alert_view(
    conn: Connection,
    app_id: str,
    customer_id: str,
    entitlement_ids: Sequence[str],
    target_ids: Sequence[str],
    now: datetime,
) -> AlertView:
    """The app's endpoints, the customer's balances of these entitlements (as stored: a
    grant whose reset is due but not yet written counts as it was; the change that
    writes the reset looks again) and the alerts' memory of these targets: three
    SELECTs in one statement, so a track with alerts pays one round trip for them."""
    entitlements, params = placeholders("e", entitlement_ids)
    targets, more = placeholders("t", target_ids)
    params.update(more, app_id=app_id, customer_id=customer_id, now=time_in(conn, now))
    text = (
        # Every column as text: PostgreSQL matches a UNION's column types.
        "SELECT 'e', id, event_types, CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS TEXT) "
        "FROM webhook_endpoints WHERE app_id = %(app_id)s "
        "UNION ALL SELECT 'b', entitlement_id, CAST(SUM(balance) AS TEXT), "
        "CAST(SUM(amount) AS TEXT) FROM grants WHERE customer_id = %(customer_id)s "
        "AND status = 'active' AND (expires_at IS NULL OR expires_at > %(now)s) "
        f"AND entitlement_id IN ({entitlements}) GROUP BY entitlement_id "
        "UNION ALL SELECT 's', target_id, signal, NULL FROM customer_signals "
        f"WHERE customer_id = %(customer_id)s AND target_id IN ({targets})"
    )
    subscriptions: list[Subscription] = []
    balances: dict[str, tuple[int, int]] = {}
    crossed: dict[str, set[str]] = {}
    for kind, a, b, c in fetch_all(conn, cached_sql(text), params):
        if kind == "e":
            subscriptions.append(subscription((a, b, c == "1")))
        elif kind == "b":
            balances[a] = (int(b or 0), int(c or 0))
        else:
            crossed.setdefault(a, set()).add(b)
    return AlertView(subscriptions, balances, crossed)


def map_signals(
    conn: Connection, customer_id: str, target_ids: Sequence[str]
) -> dict[str, dict[str, datetime]]:
    """target id -> {signal: when it was set} for these targets of the customer."""
    listed, params = placeholders("t", target_ids)
    found: dict[str, dict[str, datetime]] = {}
    if not params:
        return found
    params["customer_id"] = customer_id
    for r in fetch_all(conn, cached_sql(f"{_LIST_SIGNALS_PREFIX}({listed})"), params):
        row = _SIGNAL.read(r)
        found.setdefault(row["target_id"], {})[row["signal"]] = row["at"]
    return found


def get_signal(conn: Connection, customer_id: str, target_id: str, signal: str) -> datetime | None:
    row = fetch_one(
        conn, _GET_SIGNAL, {"customer_id": customer_id, "target_id": target_id, "signal": signal}
    )
    return _SIGNAL.read(row)["at"] if row is not None else None


def save_signal(
    conn: Connection, customer_id: str, target_id: str, signal: str, at: datetime
) -> None:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "target_id": target_id,
        "signal": signal,
        "at": at,
    }
    execute(conn, _UPSERT_SIGNAL, _SIGNAL.encode(conn, values))


def delete_signal(conn: Connection, customer_id: str, target_id: str, signal: str) -> None:
    execute(
        conn, _DELETE_SIGNAL, {"customer_id": customer_id, "target_id": target_id, "signal": signal}
    )
