"""The track's own statements, without revenipe: what the database costs for one track.

`sql_limit` measures the smallest transaction that debits a balance (three statements
on three small tables). A track writes more than that, because of what the product
promises: an auditable ledger entry per grant drawn, a usage event per call (replays,
history, reversal), the indexes that make those readable per customer, per grant and per
event. This caller runs exactly the statements a track runs on revenipe's own tables
(the same columns read, the same rows written, the same indexes maintained), with no
revenipe code around them: no validation, no catalog, no grant settling, no burn order
(it debits the first grant that can pay), no group commit. Its throughput is the
ceiling of any implementation of a track on this schema and driver, and
`track_sql_vs_sql_single` shows how much of the gap to the raw-SQL limit is the
schema's. tests/integration/test_bench_track_sql.py keeps the statements in step with
what a real track runs.

With `decide`, the same caller also does what no implementation of the product's rules
can skip: it reads the grant rows into the engine's objects (`GrantRow.read`), settles
them at the call's instant and lets the engine decide (`engine.usage.decide_track`: the
burn order across the three grants), then writes what the decision says (a grant and a
ledger entry per grant drawn, as a real track does). Still no validation, catalog,
group commit, answer object, alerts or webhooks: its throughput is the ceiling of a
track that keeps its rules in the engine, on this schema, driver and interpreter (a
refused call writes nothing here, where a real track records its usage event: the bench's
customers are never refused). On PostgreSQL, sixteen a commit is no ceiling: a real batch
locks, reads and writes its tracks together (`storage/tracks.py`), where these calls run
one after another.

With `keep_grants` as well (SQLite), each customer's grants are read once and then kept
in memory as the engine left them, so later calls run no grants statement and convert
no row: the ceiling of a design that caches grants in the process (which revenipe does
not do: it would have to know of every other writer, docs/adr/0015).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from revenipe.bench.databases import libpq_connect, sqlite_path
from revenipe.engine.grants import Grant, settle
from revenipe.engine.usage import decide_track
from revenipe.services.context import new_id
from revenipe.storage import plan_refresh
from revenipe.storage.faults import SQLITE_BUSY_TIMEOUT_MS
from revenipe.storage.grants import GrantRow
from revenipe.storage.sqlite_checkpoint import INTERVAL_S as SQLITE_CHECKPOINT_INTERVAL_S

ENTITLEMENTS = ("monthly_credits", "bonus_credits", "purchased_credits")
"""The bench's usage key `credits` draws these (bench/workload.py)."""

_EVENT_COLUMNS = (
    "id, app_id, customer_id, tracked_id, access_source_id, requested, consumed, reversed, "
    "remaining, success, error, idempotency_key, created_at, action, unit_price"
)
_GRANT_COLUMNS = (
    "id, entitlement_id, source_id, amount, balance, priority, created_at, period_start, "
    "expires_at, reset_interval, reset_anchor, rollover_min, rollover_max, status, "
    "entitlement_type, term_expires_at, follows_period"
)
_U_EVENT_COLUMNS = ", ".join(f"u.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
_LOCK = (
    "SELECT c.id, a.catalog_version, a.clock_offset_seconds, c.due_at, c.alerts_version, u.id, "
    f"{_U_EVENT_COLUMNS} FROM customers c JOIN apps a ON a.id = c.app_id "
    "LEFT JOIN usage_events u ON u.customer_id = c.id AND u.idempotency_key = {key} "
    "WHERE c.app_id = {app_id} AND c.external_id = {customer}"
)
_LOCK_BY_ID = _LOCK.replace("c.external_id = {customer}", "c.id = {customer_id}")
"""A track's lock once its process knows the customer's id (`services.context.CustomerIds`):
every track of a customer but its process's first."""
_GRANTS = (
    f"SELECT {_GRANT_COLUMNS} FROM grants WHERE customer_id = {{customer_id}} "
    "AND status = 'active' AND entitlement_id IN ({e0}, {e1}, {e2})"
)
_GRANTS_AHEAD = (
    f"SELECT {_GRANT_COLUMNS} FROM grants WHERE customer_id = (SELECT id FROM customers "
    "WHERE app_id = {app_id} AND external_id = {customer}) "
    "AND status = 'active' AND entitlement_id IN ({e0}, {e1}, {e2})"
)
_INSERT_EVENT = (
    f"INSERT INTO usage_events ({_EVENT_COLUMNS}) VALUES ({{id}}, {{app_id}}, "
    "{customer_id}, {tracked_id}, NULL, {value}, {value}, 0, {remaining}, {success}, NULL, "
    "{key}, {now}, NULL, NULL)"
)
_SAVE_GRANT = "UPDATE grants SET balance = {balance} WHERE id = {grant_id}"
_INSERT_ENTRY = (
    "INSERT INTO ledger_entries (app_id, customer_id, grant_id, kind, amount, balance_after, "
    "usage_event_id, reversal_id, reservation_id, effective_at, recorded_at) VALUES "
    "({app_id}, {customer_id}, {grant_id}, 'consumed', {amount}, {balance}, {id}, NULL, NULL, "
    "{now}, {now})"
)
_NAMES = (
    "key",
    "app_id",
    "customer",
    "customer_id",
    "e0",
    "e1",
    "e2",
    "id",
    "tracked_id",
    "value",
    "remaining",
    "success",
    "now",
    "balance",
    "grant_id",
    "amount",
)


def _styled(template: str, style: str) -> str:
    """A statement with named placeholders in the driver's style."""
    return template.format(**{name: style % name for name in _NAMES})


class _TrackStatements:
    """One track's statements on a driver cursor; `begin`/`commit` differ per database."""

    lock: str
    lock_by_id: str
    grants: str
    insert_event: str
    save_grant: str
    insert_entry: str

    def __init__(
        self, app_id: str, tracked_id: str, batch: int, decide: bool, keep_grants: bool = False
    ) -> None:
        self.app_id = app_id
        self.tracked_id = tracked_id
        self.batch = batch
        self.decide = decide or keep_grants
        """The engine decides which grants pay (see the module's docstring)."""
        self.kept: dict[str, list[Grant]] | None = {} if keep_grants else None
        """`keep_grants`: each customer's candidate grants as the last call left them."""
        self.pending = 0
        """Calls of the open transaction (batch > 1)."""
        self.ids: dict[str, str] = {}
        """Customer ids by external id, as a process remembers them after a track."""

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def stored(self, moment: datetime) -> Any:
        """A time as the driver takes it for a time column."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def writes(self) -> contextlib.AbstractContextManager[Any]:
        """Around the three writes (PostgreSQL pipelines them, as storage does)."""
        return contextlib.nullcontext()

    cursor: Any

    def call(self, customer: str, value: int, idempotency_key: str) -> bool:
        cursor = self.cursor
        e0, e1, e2 = ENTITLEMENTS
        moment = datetime.now(UTC)
        # Every statement takes its parameters by name from this one mapping.
        params: dict[str, Any] = {
            "app_id": self.app_id,
            "customer": customer,
            "key": idempotency_key,
            "e0": e0,
            "e1": e1,
            "e2": e2,
            "tracked_id": self.tracked_id,
            "value": value,
            "amount": -value,
            "success": True,
            "now": self.stored(moment),
            # Made as a real track makes it: ids that sort by time append to the end of
            # the primary key's index; random ones (uuid4) would touch a page anywhere,
            # and on PostgreSQL log a full image of each such page after a checkpoint.
            "id": new_id("use"),
        }
        known = self.ids.get(customer)
        if known is not None:
            params["customer_id"] = known
        if self.pending == 0:
            self.begin()
        try:
            kept = None if self.kept is None else self.kept.get(customer)
            if kept is None:
                locked, grant_rows = self.lock_and_read(params)
            else:
                locked, grant_rows = self.lock_only(params), []
            if locked is None:
                raise LookupError(f"no customer {customer!r} in the bench app")
            params["customer_id"] = self.ids[customer] = locked[0]
            if self.decide:
                grants = kept if kept is not None else [GrantRow.read(r).grant for r in grant_rows]
                decided, after = _decided(grants, value, moment, self.tracked_id)
            else:
                decided, after = _first_payer(grant_rows, value), []
            if decided is None:
                self._end_call(ok=False)
                return False
            draws, params["remaining"] = decided
            with self.writes():
                cursor.execute(self.insert_event, params)
                for grant_id, _amount, balance in draws:
                    cursor.execute(
                        self.save_grant, {**params, "grant_id": grant_id, "balance": balance}
                    )
                for grant_id, amount, balance in draws:
                    cursor.execute(
                        self.insert_entry,
                        {**params, "grant_id": grant_id, "amount": amount, "balance": balance},
                    )
        except BaseException:
            self.pending = 0
            if self.kept is not None:
                self.kept.clear()  # what they hold may have been rolled back
            self.rollback()
            raise
        self._end_call(ok=True)
        if self.kept is not None:  # committed (`keep_grants` commits every call)
            self.kept[customer] = after
        return True

    def lock_only(self, params: dict[str, Any]) -> Any:
        """Lock the customer by its id (`keep_grants`, SQLite only)."""
        raise NotImplementedError

    def lock_and_read(self, params: dict[str, Any]) -> tuple[Any, list[Any]]:
        """Lock the customer, then read its candidate grants: two statements."""
        self.cursor.execute(self.lock_by_id if "customer_id" in params else self.lock, params)
        locked = self.cursor.fetchone()
        if locked is None:
            return None, []
        params["customer_id"] = locked[0]
        self.cursor.execute(self.grants, params)
        return locked, list(self.cursor.fetchall())

    def _end_call(self, *, ok: bool) -> None:
        """Commit (or roll back) the call alone, or every `batch` calls in one commit,
        one after another with nothing between them, as group commit runs a batch
        (docs/adr/0015; a refusal wrote nothing)."""
        if self.batch == 1:
            if ok:
                self.commit()
            else:
                self.rollback()
            return
        self.pending += 1
        if self.pending == self.batch:
            self.flush()

    def flush(self) -> None:
        """Commit the calls of an unfinished batch (the end of a measured loop)."""
        if self.pending:
            self.pending = 0
            self.commit()


class SqliteTrackStatements(_TrackStatements):
    """On SQLite: one connection, configured as revenipe configures its writer, and the
    write-ahead log copied back by a thread of its own between transactions, as
    revenipe's storage does it (`storage/sqlite_checkpoint.py`): a commit never waits
    for a checkpoint's copy and fsyncs. Checkpointing inside the commits instead
    (SQLite's default) cost this floor a third of its throughput (docs/performance.md),
    which made it a floor of a design revenipe does not have."""

    def __init__(
        self, url: str, app_id: str, tracked_id: str, batch: int, decide: bool, keep_grants: bool
    ) -> None:
        super().__init__(app_id, tracked_id, batch, decide, keep_grants)
        path = sqlite_path(url)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        cursor = self.conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        self.cursor = cursor
        for name, template in _TEMPLATES.items():
            setattr(self, name, _styled(template, ":%s"))
        self.turn = threading.Lock()
        """Held from BEGIN to COMMIT or ROLLBACK; the checkpointer's restart waits for it."""
        self.checkpointer = _Checkpointer(path, self.turn)

    def begin(self) -> None:
        self.turn.acquire()
        try:
            self.cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.turn.release()
            raise

    def commit(self) -> None:
        try:
            self.cursor.execute("COMMIT")
        finally:
            self._end_turn()

    def rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.cursor.execute("ROLLBACK")
        finally:
            self._end_turn()

    def _end_turn(self) -> None:
        if self.turn.locked():
            self.turn.release()

    def stored(self, moment: datetime) -> Any:
        return moment.isoformat(" ", "microseconds")[:26]

    def lock_only(self, params: dict[str, Any]) -> Any:
        self.cursor.execute(self.lock_by_id, params)
        return self.cursor.fetchone()

    def close(self) -> None:
        self.checkpointer.stop()
        self.conn.close()


class _Checkpointer:
    """Every `SQLITE_CHECKPOINT_INTERVAL_S`, copy the log back while the caller goes on
    (PASSIVE), then, between two of its transactions, restart the log from its beginning
    (RESTART), as `Database.checkpoint` does for revenipe's writers."""

    def __init__(self, path: str, turn: threading.Lock) -> None:
        self.path = path
        self.turn = turn
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="floor-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=100")
            while not self._stop.wait(SQLITE_CHECKPOINT_INTERVAL_S):
                # Busy now (another process of the run reading): the next turn copies it.
                with contextlib.suppress(sqlite3.OperationalError):
                    self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        with self.turn:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        self.checkpoints += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class PostgresTrackStatements(_TrackStatements):
    """On PostgreSQL: psycopg 3, READ COMMITTED, the customer locked `FOR UPDATE`, as
    revenipe's storage runs a track (docs/adr/0015, 0023):
    - two round trips a transaction: its `BEGIN` sent with the lock and the grants'
      read, its `COMMIT` with the three writes (the connection in autocommit mode, the
      transaction opened and closed by those statements);
    - the cached plans dropped every `PLAN_REFRESH_S`: without that, the lock's plan
      made on the nearly empty tables scans every usage event, and the floor fell to a
      third of the real track's throughput in full runs."""

    def __init__(self, url: str, app_id: str, tracked_id: str, batch: int, decide: bool) -> None:
        super().__init__(app_id, tracked_id, batch, decide)
        self.conn: psycopg.Connection[Any] = libpq_connect(url, autocommit=True)
        self.cursor = self.conn.cursor()
        for name, template in _TEMPLATES.items():
            setattr(self, name, _styled(template, "%%(%s)s"))
        self.lock += " FOR UPDATE OF c"
        self.lock_by_id += " FOR UPDATE OF c"
        self.grants_ahead = _styled(_GRANTS_AHEAD, "%%(%s)s")
        self.plans_at = time.monotonic()
        self.to_begin = False
        """The next round trip opens the transaction."""
        self.committed = False
        """The last writes' round trip committed the transaction."""

    def begin(self) -> None:
        """Before the transaction, the plans are dropped when due (as a pooled
        connection of revenipe's is when checked out); its `BEGIN` travels with the
        lock."""
        now = time.monotonic()
        if now - self.plans_at >= plan_refresh.PLAN_REFRESH_S:
            self.conn.execute("DISCARD PLANS")
            self.plans_at = now
        self.to_begin = True

    def commit(self) -> None:
        if self.committed:
            self.committed = False
            return
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.to_begin = self.committed = False
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def stored(self, moment: datetime) -> Any:
        return moment

    @contextlib.contextmanager
    def writes(self) -> Iterator[None]:
        """The three writes in one round trip, with the `COMMIT` when this call ends
        the transaction (`_end_call`)."""
        with self.conn.pipeline():
            yield
            if self.pending + 1 >= self.batch:
                self.conn.execute("COMMIT")
                self.committed = True

    def lock_and_read(self, params: dict[str, Any]) -> tuple[Any, list[Any]]:
        """Both in one round trip (with the transaction's `BEGIN`), as a track does once
        its process knows the catalog: the grants named by the customer's external id,
        read after the lock."""
        grants = self.conn.cursor()
        with self.conn.pipeline():
            if self.to_begin:
                self.conn.execute("BEGIN")
                self.to_begin = False
            if "customer_id" in params:
                self.cursor.execute(self.lock_by_id, params)
                grants.execute(self.grants, params)
            else:
                self.cursor.execute(self.lock, params)
                grants.execute(self.grants_ahead, params)
        locked = self.cursor.fetchone()
        rows = list(grants.fetchall())
        grants.close()
        return locked, rows

    def close(self) -> None:
        self.conn.close()


_TEMPLATES = {
    "lock": _LOCK,
    "lock_by_id": _LOCK_BY_ID,
    "grants": _GRANTS,
    "insert_event": _INSERT_EVENT,
    "save_grant": _SAVE_GRANT,
    "insert_entry": _INSERT_ENTRY,
}


Draws = tuple[list[tuple[str, int, int]], int]
"""What a call writes: (grant id, signed amount, balance after) per grant drawn, and
what the usage event records as remaining."""


def _first_payer(rows: list[Any], value: int) -> Draws | None:
    """The first candidate grant that can pay all of `value` pays it (no burn order)."""
    payer = next((row for row in rows if row[4] >= value), None)
    if payer is None:
        return None
    balance = payer[4] - value
    return [(payer[0], -value, balance)], balance


def _decided(
    grants: list[Grant], value: int, moment: datetime, tracked_id: str
) -> tuple[Draws | None, list[Grant]]:
    """The engine's decision on the candidate grants, settled at `moment`, and the grants
    as it leaves them. A reset that falls due is settled but not written: the bench's plan
    resets once a month."""
    settled = [settle(grant, moment)[0] for grant in grants]
    decision = decide_track(
        settled,
        value,
        moment,
        tracked_id=tracked_id,
        entitlement_order=ENTITLEMENTS,
        access_source_id=None,
        held_before=bool(settled),
    )
    if not decision.success:
        return None, settled
    draws = [
        (grant.id, entry.amount, grant.balance)
        for grant, entry in zip(decision.grants, decision.entries, strict=True)
    ]
    drawn = {grant.id: grant for grant in decision.grants}
    return (draws, decision.remaining), [drawn.get(grant.id, grant) for grant in settled]


def open_caller(
    url: str,
    app_id: str,
    tracked_id: str,
    batch: int = 1,
    *,
    decide: bool = False,
    keep_grants: bool = False,
) -> _TrackStatements:
    """A caller running a track's statements, committing every `batch` calls; with
    `decide`, the engine decides what they write; with `keep_grants` (SQLite), on grants
    kept in memory after each customer's first call (see the module's docstring)."""
    if keep_grants and (batch != 1 or not url.startswith("sqlite")):
        # Kept grants are updated once their call committed: one call a commit.
        raise ValueError("keep_grants is measured on SQLite, one call a commit, only")
    if url.startswith("sqlite"):
        return SqliteTrackStatements(url, app_id, tracked_id, batch, decide, keep_grants)
    return PostgresTrackStatements(url, app_id, tracked_id, batch, decide)
