"""What a track runs on the database (docs/adr/0007, 0012, 0015): `lock_for_track` (lock
the customer, read the app's catalog version and the event already recorded under the
idempotency key, in one statement; on PostgreSQL with the candidate grants in the same
round trip) and `record_track` (the event, the grants it changed and their ledger
entries, pipelined into one round trip on PostgreSQL).

On PostgreSQL the tracks of one group-commit batch run together (`batched`): before
its jobs run, the batch reads the locks of all its tracks (with the usage event under
each one's idempotency key) and their customers' candidate grants in one round trip;
each track's writes are kept and sent together before the batch commits, or before
any other statement runs on the connection (`driver_sql.BEFORE_STATEMENT`), so that
every statement sees what the tracks before it wrote. A job uses what was read for it
only while nothing but kept track writes happened on the connection since the batch
read ahead; its candidate grants are then the customer's as the batch's kept writes
left them (a customer's second track in the batch decides on what the first one
wrote). A job whose idempotency key a kept track of the same customer used runs its
own statements: it is a replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.grants import Grant, GrantStatus, PendingEntry
from revenipe.storage.driver_sql import (
    BEFORE_STATEMENT,
    Sql,
    cached_sql,
    commit_own,
    execute_many,
    fetch_all_together,
    fetch_one,
    own_transaction,
    pipelined,
    placeholders,
    prepares,
    time_out,
)
from revenipe.storage.grants import GRANT_COLUMNS, GrantRow, save_balances, save_grant_states
from revenipe.storage.ledger import insert_entry_batches
from revenipe.storage.usage_events import EVENT_COLUMNS, UsageEventRow

_INSERT_EVENT = EVENT_COLUMNS.insert()


_CUSTOMER_OF_REQUEST = """
    COALESCE(
        (SELECT x.id FROM customers x WHERE x.id = r.customer_id AND x.app_id = r.app_id),
        (SELECT x.id FROM customers x WHERE x.app_id = r.app_id AND x.external_id = r.external_id))
"""
"""The id of the customer of a track request `r`, named by its id or by its external id,
if that customer is the app's: two lookups by unique index. Resolving ids this way,
before any join, gives PostgreSQL one plan whatever it knows of the table: a join on
`c.id = COALESCE(r.customer_id, <external id lookup>)` was planned as a hash join over
every customer of the database (a batch's cost grew with the customers; docs/adr/0015)."""

_ACTIVE_OF_REQUESTED = Sql(
    f"SELECT q.customer_id, {GRANT_COLUMNS.select_as('g')} "
    f"FROM (SELECT DISTINCT {_CUSTOMER_OF_REQUEST} AS customer_id "
    "FROM unnest(%(app_ids)s::text[], %(customer_ids)s::text[], %(external_ids)s::text[]) "
    "AS r(app_id, customer_id, external_id)) q "
    f"CROSS JOIN LATERAL (SELECT {GRANT_COLUMNS.select} FROM grants "
    "WHERE customer_id = q.customer_id AND status = 'active' "
    "AND entitlement_id = ANY(%(entitlement_ids)s::text[]) OFFSET 0) g"
)
"""`list_active_grants` of the customers of many track requests at once, each row with
its customer's id (`map_track_locks`). Each customer's grants are read by index, one
customer after another, whatever PostgreSQL knows of the table: written as
`customer_id IN (...)`, without statistics (a server without autovacuum) it was
planned as a hash join over a scan of every grant of the database, 2.6 ms for a batch
of 5 customers at 640 (EXPLAIN ANALYZE) and growing with them. `OFFSET 0` keeps the
lateral subquery from being pulled up into a join PostgreSQL may plan that way again."""


@dataclass(frozen=True, slots=True)
class CandidateQuery:
    """`list_active_grants` of one customer, named by its app and external id or by its
    id, as a statement that travels with the track's lock (`lock_for_track`)."""

    sql: Sql
    params: dict[str, Any]
    entitlement_ids: tuple[str, ...]
    source_id: str | None

    @classmethod
    def of(
        cls,
        app_id: str,
        *,
        customer_id: str | None,
        external_id: str | None,
        entitlement_ids: tuple[str, ...],
        source_id: str | None,
    ) -> CandidateQuery:
        """The customer's grants not yet known to be expired among `entitlement_ids`
        (and of `source_id` if given), as `list_active_grants` reads them."""
        if customer_id is not None:
            owner = "customer_id = %(customer_id)s"
        else:
            owner = (
                "customer_id = (SELECT id FROM customers WHERE app_id = %(app_id)s "
                "AND external_id = %(external_id)s)"
            )
        listed, params = placeholders("e", entitlement_ids)
        params.update(app_id=app_id, customer_id=customer_id, external_id=external_id)
        text = (
            f"SELECT {GRANT_COLUMNS.select} FROM grants WHERE {owner} AND status = 'active' "
            f"AND entitlement_id IN ({listed})"
        )
        if source_id is not None:
            text += " AND source_id = %(source_id)s"
            params["source_id"] = source_id
        return cls(cached_sql(text), params, entitlement_ids, source_id)

    def read(self, rows: Sequence[Sequence[Any]]) -> list[GrantRow]:
        return [GrantRow.read(r) for r in rows]


def _unique_violation() -> tuple[type[BaseException], ...]:
    # psycopg's class only once psycopg is loaded: SQLite processes never load it.
    psycopg = sys.modules.get("psycopg")
    return (psycopg.errors.UniqueViolation,) if psycopg is not None else ()


class IdempotencyKeyTaken(Exception):
    """Another transaction committed a usage event under the same key first."""


@contextlib.contextmanager
def _idempotency_checked(records: Sequence[TrackRecord]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, (sqlite3.IntegrityError, *_unique_violation())):
            raise
        # Both drivers name the constraint or its column: "...idempotency..."
        keys = [r.event.idempotency_key for r in records if r.event.idempotency_key is not None]
        if len(records) == 1 and keys and "idempotency" in str(exc):
            raise IdempotencyKeyTaken(keys[0]) from exc
        raise


TRACK_BATCH = "revenipe.track_batch"
"""Key of `Connection.info` under which a batch of tracks (`storage.track_batch`) keeps
its locks read ahead (`take`) and the tracks' writes not yet sent (`keep`)."""


def record_track(
    conn: Connection,
    event: UsageEventRow,
    states: Sequence[Grant],
    balances: Sequence[Grant],
    settlement: Sequence[PendingEntry],
    consumption: Sequence[PendingEntry],
) -> None:
    """Write a track's outcome: its event, the grants it changed (`balances`: only their
    balance), their entries. `IdempotencyKeyTaken` if the (customer, key) pair exists
    already. One round trip on PostgreSQL; in a batch of tracks (`storage.track_batch`)
    kept and sent with the other tracks' writes. The entries of `settlement` go first."""
    record = TrackRecord(event, states, balances, settlement, consumption)
    batch = conn.info.get(TRACK_BATCH)
    if batch is None or not batch.keep(record):
        insert_track_records(conn, [record])


@dataclass(frozen=True, slots=True)
class TrackRecord:
    """What `record_track` writes for one track."""

    event: UsageEventRow
    states: Sequence[Grant]
    balances: Sequence[Grant]
    settlement: Sequence[PendingEntry]
    consumption: Sequence[PendingEntry]


def insert_track_records(
    conn: Connection, records: Sequence[TrackRecord], *, commit: bool = False
) -> None:
    """Write `records` in order, in one round trip on PostgreSQL (pipeline mode): their
    events, each grant they changed as the last of them left it (balance, period and
    status if any of them changed more than the balance), their ledger entries; with
    `commit` (a batch's own transaction, `batched`), the `COMMIT` too."""
    whole: dict[str, bool] = {}
    last: dict[str, Grant] = {}
    for record in records:
        for grant in record.states:
            last[grant.id], whole[grant.id] = grant, True
        for grant in record.balances:
            last[grant.id], whole[grant.id] = grant, whole.get(grant.id, False)
    with _idempotency_checked(records), pipelined(conn, commit=commit):
        execute_many(conn, _INSERT_EVENT, [EVENT_COLUMNS.params(conn, r.event) for r in records])
        save_grant_states(conn, [g for g in last.values() if whole[g.id]])
        save_balances(conn, [g for g in last.values() if not whole[g.id]])
        # Settling writes resets and expiries, never `consumed` entries: the event id
        # goes to the consumption's entries only (`insert_entry_batches`).
        insert_entry_batches(
            conn,
            [
                (
                    r.event.app_id,
                    r.event.customer_id,
                    [*r.settlement, *r.consumption],
                    r.event.created_at,
                    (r.event.id, None, None),
                )
                for r in records
            ],
        )


@dataclass(frozen=True, slots=True)
class TrackLock:
    """What a track needs before deciding: the locked customer, the app's catalog
    version, and the usage event already recorded under the idempotency key, if any."""

    customer_id: str
    catalog_version: int
    previous: UsageEventRow | None
    clock_offset_seconds: int = 0
    due_at: datetime | None = None
    alerts_version: int | None = None
    """The catalog version the customer's usage-alert memory is current with."""
    candidates: list[GrantRow] | None = None
    """The rows of the `CandidateQuery` sent with the lock, when one was (read after the
    lock was taken)."""


_LOCK_HEAD = (
    "locked_customer_id",
    "catalog_version",
    "clock_offset_seconds",
    "customer_due_at",
    "customer_alerts_version",
    "previous_id",
)
"""The first columns of `_LOCK_FOR_TRACK`, by name; the usage event's (`_EVENT`) follow."""
_LOCK_FOR_TRACK = f"""
    SELECT c.id, a.catalog_version, a.clock_offset_seconds, c.due_at, c.alerts_version, u.id,
           {EVENT_COLUMNS.select_as("u")}
    FROM customers c JOIN apps a ON a.id = c.app_id
    LEFT JOIN usage_events u ON u.customer_id = c.id AND u.idempotency_key = %(key)s
    WHERE c.app_id = %(app_id)s AND c.{{column}} = %(customer)s
"""
_LOCK_BY_ID = Sql(_LOCK_FOR_TRACK.format(column="id"), row_lock="FOR UPDATE OF c")
_LOCK_BY_EXTERNAL_ID = Sql(_LOCK_FOR_TRACK.format(column="external_id"), row_lock="FOR UPDATE OF c")


@dataclass(frozen=True, slots=True, eq=False)
class TrackLockRequest:
    """What a track locks and reads first (`lock_for_track`): its customer, by id or by
    external id, the usage event under its idempotency key, and with `candidates` the
    customer's candidate grants. Compared by identity: a batch of tracks
    (`storage.track_batch`) reads it ahead for the very job that made it."""

    app_id: str
    customer_id: str | None
    external_id: str | None
    idempotency_key: str | None
    candidates: CandidateQuery | None = None


def lock_for_track(conn: Connection, request: TrackLockRequest) -> TrackLock | None:
    """Lock an existing customer and read what a track needs, in one round trip; with
    `candidates`, the customer's candidate grants too, in the same round trip, read
    once the lock is held (the caller checks they are the ones it needs). In a batch of
    tracks, what the batch read for this request ahead of its jobs, if still valid."""
    batch = conn.info.get(TRACK_BATCH)
    if batch is not None:
        found = batch.take(request)
        if found is not NOT_READ:
            return found  # type: ignore[no-any-return]
    statement, params = _lock_statement(request)
    candidates = request.candidates
    grant_rows = None
    if candidates is None:
        row = fetch_one(conn, statement, params)
    else:
        locked, grant_rows = fetch_all_together(
            conn, [(statement, params), (candidates.sql, candidates.params)]
        )
        row = locked[0] if locked else None
    if row is None:
        return None
    return _track_lock(
        row,
        None if candidates is None or grant_rows is None else candidates.read(grant_rows),
    )


_LOCK_MANY = Sql(
    f"""
    WITH requested AS MATERIALIZED (
        SELECT r.position, r.key, {_CUSTOMER_OF_REQUEST} AS customer_id
        FROM unnest(%(positions)s::integer[], %(app_ids)s::text[], %(customer_ids)s::text[],
                    %(external_ids)s::text[], %(keys)s::text[])
             AS r(position, app_id, customer_id, external_id, key))
    SELECT q.position, c.id, a.catalog_version, a.clock_offset_seconds, c.due_at,
           c.alerts_version, u.id, {EVENT_COLUMNS.select_as("u")}
    FROM requested q
    JOIN customers c ON c.id = q.customer_id
    JOIN apps a ON a.id = c.app_id
    LEFT JOIN LATERAL (
        SELECT * FROM usage_events x WHERE x.customer_id = c.id AND x.idempotency_key = q.key
        LIMIT 1) u ON true
    ORDER BY c.id
    """,
    row_lock="FOR UPDATE OF c",
)
"""`_LOCK_BY_ID` and `_LOCK_BY_EXTERNAL_ID` for many tracks at once, each row tagged with
its request's position; the customers are locked in id order (PostgreSQL locks the rows
of `ORDER BY ... FOR UPDATE` in their sorted order)."""


_GENERIC_PLAN = Sql("SET LOCAL plan_cache_mode = force_generic_plan")
"""Sent before `_LOCK_MANY` (and `_PLANS_AS_BEFORE` after the batch's reads). Over arrays
of a batch's few requests, PostgreSQL would otherwise plan `_LOCK_MANY` again on every
batch: its generic plan assumes 100 rows a parameter array and looks dearer than a
plan made for 5. Measured (EXPLAIN ANALYZE, 5 and 32 requests): planning 0.18-0.20 ms
a batch, the plan kept 0.01-0.03, and it runs as fast or faster (0.07 against 0.10 ms)."""
_PLANS_AS_BEFORE = Sql("RESET plan_cache_mode")


def _lock_statement(request: TrackLockRequest) -> tuple[Sql, dict[str, Any]]:
    """`lock_for_track`'s statement for `request`, and its parameters."""
    by_id = request.customer_id is not None
    return (_LOCK_BY_ID if by_id else _LOCK_BY_EXTERNAL_ID), {
        "app_id": request.app_id,
        "customer": request.customer_id if by_id else request.external_id,
        "key": request.idempotency_key,
    }


def map_track_locks(
    conn: Connection, requests: Sequence[TrackLockRequest], *, begin: bool = False
) -> tuple[dict[TrackLockRequest, TrackLock | None], dict[str, list[GrantRow]]]:
    """PostgreSQL: `lock_for_track` of each request (None: no such customer) without its
    candidates, and the active grants of every entitlement some request asks for, of
    every customer those requests locked (by customer id), in one round trip for all of
    them: the locks, then the grants in a statement of its own sent with them, which
    PostgreSQL runs once the locks are granted and which so reads what was committed
    before (READ COMMITTED takes a snapshot per statement). `begin`: the `BEGIN` of the
    batch's own transaction goes first in the same round trip (`own_transaction`)."""
    if len(requests) == 1:
        return _map_one_track_lock(conn, requests[0], begin=begin)
    statements: list[tuple[Sql, dict[str, Any] | None]] = [
        (
            _LOCK_MANY,
            {
                **_named(requests),
                "positions": list(range(len(requests))),
                "keys": [r.idempotency_key for r in requests],
            },
        )
    ]
    asking = [r for r in requests if r.candidates is not None]
    if asking:
        entitlement_ids = {e for r in asking for e in r.candidates.entitlement_ids}  # type: ignore[union-attr]
        statements.append(
            (_ACTIVE_OF_REQUESTED, {**_named(asking), "entitlement_ids": sorted(entitlement_ids)})
        )
    if prepares(conn):
        planned = [(_GENERIC_PLAN, None), *statements, (_PLANS_AS_BEFORE, None)]
        rows, *grant_rows = fetch_all_together(conn, planned, begin=begin)[1:-1]
    else:
        rows, *grant_rows = fetch_all_together(conn, statements, begin=begin)
    locks: dict[TrackLockRequest, TrackLock | None] = dict.fromkeys(requests)
    grants: dict[str, list[GrantRow]] = {}
    for row in rows:
        request = requests[row[0]]
        lock = locks[request] = _track_lock(row[1:], None)
        if request.candidates is not None:
            grants.setdefault(lock.customer_id, [])
    for row in grant_rows[0] if grant_rows else ():
        if row[0] in grants:
            grants[row[0]].append(GrantRow.read(row[1:]))
    return locks, grants


def _map_one_track_lock(
    conn: Connection, request: TrackLockRequest, *, begin: bool
) -> tuple[dict[TrackLockRequest, TrackLock | None], dict[str, list[GrantRow]]]:
    """`map_track_locks` of a batch of one track (a lone caller): `lock_for_track`'s
    statements, by index lookups of this one customer, rather than the batch's
    statements over arrays, which cost PostgreSQL several times as much for one."""
    statement, params = _lock_statement(request)
    statements = [(statement, params)]
    if request.candidates is not None:
        statements.append((request.candidates.sql, request.candidates.params))
    rows, *grant_rows = fetch_all_together(conn, statements, begin=begin)
    if not rows:
        return {request: None}, {}
    lock = _track_lock(rows[0], None)
    grants = {}
    if request.candidates is not None:
        grants[lock.customer_id] = request.candidates.read(grant_rows[0])
    return {request: lock}, grants


def _named(requests: Sequence[TrackLockRequest]) -> dict[str, list[str | None]]:
    """The customers of `requests` as `_CUSTOMER_OF_REQUEST` takes them, each by id or else by
    external id."""
    return {
        "app_ids": [r.app_id for r in requests],
        "customer_ids": [r.customer_id for r in requests],
        "external_ids": [r.external_id if r.customer_id is None else None for r in requests],
    }


NOT_READ = object()
"""`take`'s answer when a batch read nothing (still valid) for a request."""


def _track_lock(row: Sequence[Any], candidates: list[GrantRow] | None) -> TrackLock:
    """A `TrackLock` from a row of `_LOCK_FOR_TRACK`'s columns."""
    head = dict(zip(_LOCK_HEAD, row[: len(_LOCK_HEAD)], strict=True))
    previous = None
    if head["previous_id"] is not None:
        previous = UsageEventRow(**EVENT_COLUMNS.read(row[len(_LOCK_HEAD) :]))
    return TrackLock(
        customer_id=head["locked_customer_id"],
        catalog_version=head["catalog_version"],
        previous=previous,
        clock_offset_seconds=head["clock_offset_seconds"],
        due_at=time_out(head["customer_due_at"]),
        alerts_version=head["customer_alerts_version"],
        candidates=candidates,
    )


class TrackBatch:
    """The state of one batch on its connection (`Connection.info[TRACK_BATCH]`)."""

    __slots__ = ("clean", "grants", "kept", "keys", "read")

    def __init__(
        self,
        read: dict[TrackLockRequest, TrackLock | None],
        grants: dict[str, list[GrantRow]],
    ) -> None:
        self.read = read
        self.grants = grants
        """Customer id -> its active grants among those read ahead, as the kept writes
        left them."""
        self.keys: set[tuple[str, str]] = set()
        """(customer id, idempotency key) of every kept track."""
        self.clean = True
        """No statement but kept track writes has run since the batch read ahead."""
        self.kept: list[TrackRecord] = []

    def take(self, request: TrackLockRequest) -> Any:
        """The lock read ahead for `request` (None: no such customer), with the
        candidate grants as the batch's tracks left them, or `NOT_READ` when nothing
        valid was read for it."""
        if request not in self.read or not self.clean:
            self.read.pop(request, None)
            return NOT_READ
        lock = self.read.pop(request)
        if lock is None:
            return None
        customer_id = lock.customer_id
        key = request.idempotency_key
        if key is not None and (customer_id, key) in self.keys:
            return NOT_READ
        query = request.candidates
        if query is None:
            return lock
        return dataclasses.replace(
            lock, candidates=_candidates(self.grants.get(customer_id, []), query)
        )

    def keep(self, record: TrackRecord) -> bool:
        """Keep a track's writes to send them with the others', and apply them to the
        grants the batch read ahead."""
        self.kept.append(record)
        event = record.event
        if event.idempotency_key is not None:
            self.keys.add((event.customer_id, event.idempotency_key))
        rows = self.grants.get(event.customer_id)
        if rows:
            changed = {g.id: g for g in (*record.states, *record.balances)}
            self.grants[event.customer_id] = [
                dataclasses.replace(row, grant=changed[row.grant.id])
                if row.grant.id in changed
                else row
                for row in rows
                if changed.get(row.grant.id, row.grant).status is GrantStatus.ACTIVE
            ]
        return True

    def send(self, conn: Connection, *, commit: bool = False) -> None:
        """Send the kept writes (one round trip), with `commit` the `COMMIT` of the
        batch's own transaction after them."""
        if self.kept:
            kept, self.kept = self.kept, []
            insert_track_records(conn, kept, commit=commit)
        elif commit:
            commit_own(conn)

    def before_statement(self, conn: Connection) -> None:
        self.clean = False
        self.send(conn)


def _candidates(rows: list[GrantRow], query: CandidateQuery) -> list[GrantRow]:
    """The rows `query` reads of a customer's active grants."""
    return [
        row
        for row in rows
        if row.grant.entitlement_id in query.entitlement_ids
        and (query.source_id is None or row.grant.source_id == query.source_id)
    ]


@contextlib.contextmanager
def batched(conn: Connection, requests: Sequence[TrackLockRequest | None]) -> Iterator[None]:
    """Run the jobs of a PostgreSQL group-commit batch inside this block, `requests`
    being their tracks' (None: a job that is not a track): read ahead for every track in
    one round trip, keep the tracks' writes, and send them before the block ends (then
    the batch commits). An error anywhere is the batch's: it runs again job by job."""
    tracks = [request for request in requests if request is not None]
    if not tracks:
        yield
        return
    # The batch's transaction begins with its first round trip and commits with its
    # last (`driver_sql.own_transaction`): two round trips fewer a batch.
    with own_transaction(conn) as own:
        batch = TrackBatch(*map_track_locks(conn, tracks, begin=own))
        conn.info[TRACK_BATCH] = batch
        conn.info[BEFORE_STATEMENT] = batch.before_statement
        try:
            yield
            batch.send(conn, commit=own)
        finally:
            # `Connection.info` outlives the transaction: stop keeping writes on `conn`.
            conn.info.pop(TRACK_BATCH, None)
            conn.info.pop(BEFORE_STATEMENT, None)
