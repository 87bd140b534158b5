"""Opening a database: URL parsing, connection settings, transactions, migrations."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.storage import tracks as track_store
from revenipe.storage.faults import SQLITE_BUSY_TIMEOUT_MS, busy_error, expected_errors, is_deadlock
from revenipe.storage.group_commit import MAX_BATCH, GroupCommitter
from revenipe.storage.lane_connections import LaneConnections
from revenipe.storage.sqlite_checkpoint import Checkpointer
from revenipe.storage.sqlite_lock import SqliteWriterLock, begin_immediate

T = TypeVar("T")
Job = Callable[[Connection], Any]
OrderKey = tuple[str | None, ...]
"""What a grouped write locks, in a form every process sorts alike."""
GroupedJob = tuple[Job, OrderKey, float]
"""A job, what it locks, and when it was handed in (`time.monotonic()`)."""

DEFAULT_DATABASE_URL = "sqlite:///./revenipe.db"
_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x7265_7665  # "reve": an advisory lock key of our own
SQLITE_RESTART_WAIT_MS = 10  # every process's writers wait meanwhile (docs/adr/0012)
POSTGRES_WRITE_LANES = 2
"""Group-commit transactions one process runs at once on PostgreSQL (SQLite: one) unless
`open_database` says otherwise. Fewer, larger batches do more (docs/adr/0015)."""
POSTGRES_MAX_BATCH = 32
"""Jobs per PostgreSQL batch: each job is a subtransaction (a savepoint), and past 64 of
them in one transaction PostgreSQL's per-process cache of subtransaction ids overflows,
which slows every other session's snapshots."""


def normalize_url(url: str) -> str:
    """Accept the standard `postgresql://` form and pick our driver (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite:///path/to/file.db or postgresql://user@host:port/db",
        )
    return parsed.render_as_string(hide_password=False)


@dataclass
class Database:
    """An opened database: an SQLAlchemy engine plus how to begin each kind of transaction.

    `write()` takes the write lock up front on SQLite (``BEGIN IMMEDIATE``) so that two
    writers never both read a balance and then both try to change it; on PostgreSQL the
    repository locks the customer's row instead (``SELECT ... FOR UPDATE``).
    """

    engine: Engine
    url: str
    # SQLite has one writer at a time. Threads of this process take turns here, woken in
    # turn when the writer before them commits, instead of each polling the file lock
    # through SQLite's busy handler, whose growing sleeps let newcomers overtake a
    # waiter again and again (the soak's write p99 grew to seconds that way). Other
    # processes' writers take turns with this one at a file lock (`SqliteWriterLock`).
    _sqlite_writer: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _writes: int = field(default=0, repr=False)
    _checkpointer: Checkpointer | None = field(default=None, repr=False)
    _sqlite_file: bool = field(default=False, repr=False)
    """SQLite on a file: writes go through one connection kept open (`_sqlite_write`)."""
    _sqlite_writer_conn: Connection | None = field(default=None, repr=False)
    _group: GroupCommitter[GroupedJob, Any] | None = field(default=None, repr=False)
    _writer_lock: SqliteWriterLock | None = field(default=None, repr=False)
    postgres_write_lanes: int | None = None  # None: POSTGRES_WRITE_LANES
    _lane_connections: LaneConnections | None = field(default=None, repr=False)
    """PostgreSQL: the connection each group-commit lane keeps between its batches."""

    def __post_init__(self) -> None:
        if not self.is_sqlite:
            self._lane_connections = LaneConnections(self.engine)
        # Made here, not on first use: two threads' first grouped writes would each
        # make one, and so two writers of lane 0.
        self._group = self._new_committer()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def write(self, *, waited_ms: int = 0, lane: int | None = None) -> Iterator[Connection]:
        """One read-write transaction, committed on success, rolled back on error.

        `waited_ms`: how long the caller already waited for it (in a group commit's
        queue); it counts against SQLite's busy time-out. `lane`: the group-commit lane
        running it, whose connection it runs on (PostgreSQL: `LaneConnections`)."""
        if self._sqlite_file:
            with self._sqlite_write(waited_ms) as conn:
                yield conn
            return
        if lane is not None and self._lane_connections is not None:
            self._writes += 1
            with self._faults(), self._lane_connections.transaction(lane) as conn:
                yield conn
            return
        with contextlib.ExitStack() as stack:
            waited_ms = stack.enter_context(self._sqlite_turn()) if self.is_sqlite else 0
            self._writes += 1
            stack.enter_context(self._faults())
            conn = stack.enter_context(self.engine.connect())
            if self.is_sqlite:  # in memory: this process is the only writer
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def write_grouped(self, job: Callable[[Connection], T], *, key: OrderKey = ()) -> T:
        """Run `job` in a write transaction shared with the jobs other threads hand in
        meanwhile (group commit, docs/adr/0015); its result once that transaction has
        committed. `job` must do nothing but database work on the connection it gets: it
        may be run again (after a neighbour's error, after a deadlock). If it raises,
        its own changes are rolled back and the exception is raised here; its
        neighbours' outcomes are as if each had run alone: the batch is rolled back and
        runs again, each job behind a savepoint (`_run_together`).

        `key` names what the job locks (the customer): jobs with equal keys run one
        after another in the order handed in, and a batch takes its locks in key order,
        so that two processes' batches never wait for each other in a circle."""
        result: T = self._committer().submit((job, key, time.monotonic()), key)
        return result

    async def write_grouped_async(self, job: Callable[[Connection], T], *, key: OrderKey = ()) -> T:
        """`write_grouped` for a caller on an event loop: it awaits the commit instead of
        blocking (the server's track route; no thread-pool hop)."""
        result: T = await self._committer().submit_async((job, key, time.monotonic()), key)
        return result

    def _committer(self) -> GroupCommitter[GroupedJob, Any]:
        if self._group is None:
            raise InvariantViolation("a database without its group committer")
        return self._group

    def _new_committer(self) -> GroupCommitter[GroupedJob, Any]:
        return GroupCommitter(
            self._run_jobs,
            lanes=1 if self.is_sqlite else self.postgres_write_lanes or POSTGRES_WRITE_LANES,
            max_batch=MAX_BATCH if self.is_sqlite else POSTGRES_MAX_BATCH,
        )

    def _faults(self) -> contextlib.AbstractContextManager[None]:
        """Database faults raised in the block as the errors callers expect (`faults`)."""
        return expected_errors(self._connection_lost)

    def _connection_lost(self) -> None:
        """PostgreSQL dropped a connection (restarted, most likely): every pooled
        connection made before is closed and replaced when next taken, instead of each
        one failing a transaction of its own first; the lanes give theirs back now.

        This is what SQLAlchemy does itself when it sees a dropped connection (its
        `Connection._handle_dbapi_exception` calls the same pool method); most of our
        statements run below it (`driver_sql`), where it cannot see one. The pool stays
        the same: replacing it (`Engine.dispose`) left the old one's connections open
        on the server until garbage collection, and after a healthy server dropped one
        idle connection (`idle_session_timeout`), every other one with them."""
        self.engine.pool._invalidate(None)  # type: ignore[arg-type]
        if self._lane_connections is not None:
            self._lane_connections.hand_back()

    def write_each(
        self, jobs: Sequence[tuple[Callable[[Connection], T], OrderKey]]
    ) -> list[T | Exception]:
        """Run many jobs of one caller (a batch track's items) in shared write
        transactions, as a group-commit batch does (together, or each job behind a
        savepoint once one raised), in key order (jobs with equal keys in the order
        given), as many per transaction as a group-commit batch holds. Each job's
        outcome is its result or the exception it alone raised; a failed commit raises
        (the earlier transactions stay committed: the caller retries with its
        idempotency keys)."""
        size = MAX_BATCH if self.is_sqlite else POSTGRES_MAX_BATCH
        outcomes: list[T | Exception] = []
        for start in range(0, len(jobs), size):
            handed_in = time.monotonic()
            chunk = [(job, key, handed_in) for job, key in jobs[start : start + size]]
            if len(chunk) > 1:
                outcomes.extend(self._run_jobs(None, chunk))
                continue
            try:  # alone, `_run_jobs` raises the job's own error (or its commit's)
                outcomes.extend(self._run_jobs(None, chunk))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _run_jobs(self, lane: int | None, batch: Sequence[GroupedJob]) -> list[Any]:
        """One transaction for a batch of jobs; see `write_grouped`. `lane`: the
        group-commit lane running it (None: a caller's own, `write_each`)."""
        # The oldest job's time in the queue counts against the busy time-out, so that
        # no caller waits for a locked database longer than the time-out in all.
        waited_ms = int((time.monotonic() - min(job[2] for job in batch)) * 1000)
        if len(batch) == 1:
            # Alone, the transaction is the job's: its error rolls everything back (a
            # PostgreSQL track still in two round trips, as in a batch).
            job = batch[0][0]
            lock = None if self.is_sqlite else getattr(job, "track_lock", None)
            with (
                self.write(waited_ms=waited_ms, lane=lane) as conn,
                track_store.batched(conn, [lock]),
            ):
                return [job(conn)]
        order = sorted(range(len(batch)), key=lambda i: _sortable(batch[i][1]))
        together = self._run_together(batch, order, waited_ms, lane)
        if together is not None:
            return together
        return self._run_each_behind_a_savepoint(batch, order)

    def _run_together(
        self, batch: Sequence[GroupedJob], order: list[int], waited_ms: int, lane: int | None
    ) -> list[Any] | None:
        """Every job of the batch in one transaction with nothing between them: what
        almost every batch is (refusals are answers, not errors). None, with everything
        rolled back, if a job raised: the batch then runs again, each job behind a
        savepoint. Savepoints cost two statements a job, two round trips on PostgreSQL:
        as much as the job's own reads."""
        outcomes: list[Any] = [None] * len(batch)
        try:
            with self.write(waited_ms=waited_ms, lane=lane) as conn, _failing_the_batch():
                # PostgreSQL: the batch's tracks lock, read and write together.
                tracks = (
                    contextlib.nullcontext()
                    if self.is_sqlite
                    else track_store.batched(
                        conn, [getattr(batch[i][0], "track_lock", None) for i in order]
                    )
                )
                with tracks:
                    for index in order:
                        outcomes[index] = batch[index][0](conn)
        except _JobFailed:
            return None
        return outcomes

    def _run_each_behind_a_savepoint(
        self, batch: Sequence[GroupedJob], order: list[int]
    ) -> list[Any]:
        """The batch again, each job behind a savepoint: a job that raises is rolled back
        alone and its exception is its answer; its neighbours are not touched."""
        outcomes: list[Any] = [None] * len(batch)
        retry: list[int] = []
        with self.write() as conn:
            raw = conn.connection.dbapi_connection
            if raw is None:
                raise InvariantViolation("a write transaction without a driver connection")
            for index in order:
                raw.execute("SAVEPOINT job")
                try:
                    with self._faults():
                        outcomes[index] = batch[index][0](conn)
                except Exception as exc:
                    raw.execute("ROLLBACK TO SAVEPOINT job")
                    outcomes[index] = exc
                    if is_deadlock(exc):
                        retry.append(index)
                raw.execute("RELEASE SAVEPOINT job")
        for index in retry:
            # Another process locked the same customers in another order (a customer
            # named by its external id there, by its id here) and PostgreSQL broke the
            # tie by failing this job: alone, it cannot meet that again.
            try:
                with self.write() as conn:
                    outcomes[index] = batch[index][0](conn)
            except Exception as exc:
                outcomes[index] = exc
        return outcomes

    @contextlib.contextmanager
    def _sqlite_write(self, queued_ms: int) -> Iterator[Connection]:
        """A write on SQLite's one writer connection: kept open by this process, used
        under its writer lock only, its busy handler off for good (other revenipe
        processes' writers are waited for at a file lock, other programs' by
        `begin_immediate`). No pool checkout, no PRAGMAs, no reset per
        write: about a tenth of a track's time on SQLite (docs/adr/0015)."""
        with self._sqlite_turn() as waited_ms, self._faults(), self._file_turn() as lock:
            waited_s = (queued_ms + waited_ms) / 1000
            deadline = time.monotonic() + max(0.0, SQLITE_BUSY_TIMEOUT_MS / 1000 - waited_s)
            lock.acquire()  # other revenipe processes' turns (docs/adr/0022)
            if time.monotonic() >= deadline:
                raise busy_error()
            self._writes += 1
            conn = self._writer_connection()
            raw = conn.connection.dbapi_connection
            if raw is None:
                raise InvariantViolation("the writer connection has no DBAPI connection")
            if not begin_immediate(raw, deadline):  # another program's writer
                raise busy_error()
            try:
                yield conn
            except BaseException:
                self._end_write(conn, raw, commit=False)
                raise
            self._end_write(conn, raw, commit=True)

    @contextlib.contextmanager
    def _file_turn(self) -> Iterator[SqliteWriterLock]:
        """The lock this process's writer shares with other processes' (released after)."""
        if self._writer_lock is None:
            self._writer_lock = SqliteWriterLock(str(make_url(self.url).database))
        try:
            yield self._writer_lock
        finally:
            self._writer_lock.release()

    def _writer_connection(self) -> Connection:
        conn = self._sqlite_writer_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect()
            raw = conn.connection.dbapi_connection
            if raw is None:
                raise InvariantViolation("a new connection has no DBAPI connection")
            raw.execute("PRAGMA busy_timeout=0")
            self._sqlite_writer_conn = conn
        return conn

    def _end_write(self, conn: Connection, raw: Any, *, commit: bool) -> None:
        """End the transaction `begin_immediate` began on the driver connection, and
        SQLAlchemy's own, if a statement made it begin one (it issues no SQL for it)."""
        try:
            if commit:
                raw.commit()
                conn.commit()
            else:
                raw.rollback()
                conn.rollback()
        except BaseException:
            # A connection in an unknown state is never used again.
            self._sqlite_writer_conn = None
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise

    @contextlib.contextmanager
    def _sqlite_turn(self) -> Iterator[int]:
        """This process's turn to write; yields the milliseconds it waited for it."""
        started = time.monotonic()
        if not self._sqlite_writer.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise busy_error()
        try:
            yield int((time.monotonic() - started) * 1000)
        finally:
            self._sqlite_writer.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction (a consistent snapshot on both dialects)."""
        with self._faults(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN")
            else:
                conn.begin()
            try:
                yield conn
            finally:
                conn.rollback()

    def checkpoint(self) -> None:
        """Copy SQLite's write-ahead log back into the database file, and let the next
        writer start the log again from its beginning (`storage.sqlite_checkpoint` runs it)."""
        with self._faults(), self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if raw is None:
                raise InvariantViolation("a checked-out connection has no DBAPI connection")
            # The bulk of the work, fsyncs included, while writers go on.
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            # Then what was appended meanwhile, at a turn of every process's writers (a
            # log never fully copied at a moment without writers is never restarted and
            # grows without end), waiting for readers only SQLITE_RESTART_WAIT_MS.
            with self._sqlite_turn(), self._file_turn() as lock:
                lock.acquire()
                raw.execute(f"PRAGMA busy_timeout={SQLITE_RESTART_WAIT_MS}")
                try:
                    raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                finally:
                    raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

    def writes_so_far(self) -> int:
        """How many write transactions this process began (the checkpoint thread's cue)."""
        return self._writes

    def hand_back_lane_connections(self) -> None:
        """PostgreSQL: give the connections the write lanes keep back to the pool (a
        lane's next batch checks one out again)."""
        if self._lane_connections is not None:
            self._lane_connections.hand_back()

    def close(self) -> None:
        if self._lane_connections is not None:
            self._lane_connections.close()
        writer, self._sqlite_writer_conn = self._sqlite_writer_conn, None
        if writer is not None:
            with self._sqlite_writer, contextlib.suppress(sqlite3.Error, DBAPIError):
                writer.close()
        if self._checkpointer is not None:
            # A checkpoint under way ends first: after this, nothing reopens the lock.
            self._checkpointer.stop(timeout_s=SQLITE_BUSY_TIMEOUT_MS / 1000)
            self._checkpointer = None
            with contextlib.suppress(RevenipeError, sqlite3.Error, DBAPIError):
                self.checkpoint()
        if self._writer_lock is not None:
            self._writer_lock.close()
        self.engine.dispose()


@contextlib.contextmanager
def _failing_the_batch() -> Iterator[None]:
    """A job's exception (or its batch's, reading ahead or sending the tracks' writes)
    as `_JobFailed`: the batch then runs again, each job behind a savepoint."""
    try:
        yield
    except Exception as exc:
        raise _JobFailed from exc


class _JobFailed(Exception):
    """A job of a batch run together raised (its exception is the cause)."""


def _sortable(key: OrderKey) -> tuple[str, ...]:
    return tuple(part or "" for part in key)


def open_database(
    url: str = DEFAULT_DATABASE_URL,
    *,
    migrate: bool = True,
    postgres_write_lanes: int | None = None,
) -> Database:
    """Open (and create, and migrate to the latest schema) the database at `url`.

    SQLite URLs may carry `?synchronous=full` to fsync every commit (durable across power
    loss); the default `normal` in WAL mode is durable across a killed process.
    PostgreSQL URLs may carry `?prepare=off` (behind a pooler in transaction mode:
    `storage.postgres_engine`).
    """
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    on_file = False
    if parsed.drivername.startswith("sqlite"):
        synchronous = str(parsed.query.get("synchronous", "normal")).upper()
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, "synchronous must be normal, full or extra"
            )
        parsed = parsed.difference_update_query(["synchronous"])
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,
        }
        engine = create_engine(parsed, **kwargs)
        on_file = bool(parsed.database) and parsed.database != ":memory:"
        _configure_sqlite(engine, synchronous, checkpoint_in_commits=not on_file)
    else:
        from revenipe.storage.postgres_engine import create_postgres_engine  # psycopg

        engine = create_postgres_engine(parsed)
    database = Database(
        engine=engine, url=url, _sqlite_file=on_file, postgres_write_lanes=postgres_write_lanes
    )
    if migrate:
        migrate_to_latest(database)
    if database.is_sqlite and on_file:
        database._checkpointer = Checkpointer(database)
    return database


def _configure_sqlite(engine: Engine, synchronous: str, *, checkpoint_in_commits: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (IMMEDIATE for writes): turn off pysqlite's own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not checkpoint_in_commits:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()


LATEST_REVISION = "0010"
"""The newest migration (a test keeps it equal to Alembic's head): a database already
there opens without loading Alembic, which cost every process 0.3 s and a file lock."""


def migrate_to_latest(database: Database) -> None:
    """Run every pending Alembic migration, once, even with many processes starting."""
    if _current_revision(database) == LATEST_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    postgres = not database.is_sqlite
    with _migration_lock(database), database.engine.connect() as conn:
        if postgres:
            # Read committed whatever the server's default: a process that waited for
            # the lock below must see the revision the one before it committed.
            conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if postgres:
                # Held by the migration's own transaction, taken before Alembic reads the
                # revision: no connection waits idle in a transaction beside the migration
                # (a server's `idle_in_transaction_session_timeout` ended such a one), and
                # a pooler in transaction mode keeps the lock and the migration on one
                # server connection (a session's lock could stay behind on another).
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                conn.execute(lock, {"key": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


def _current_revision(database: Database) -> str | None:
    """The revision the database is at, or None (a new database, or unreadable now: the
    migration then runs, or fails with the real error)."""
    try:
        with database.engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:
        return None
    return revision if isinstance(revision, str) else None


@contextlib.contextmanager
def _migration_lock(database: Database) -> Iterator[None]:
    """SQLite: one migration at a time, by a lock file of the database's own.
    (PostgreSQL: the migration's transaction takes an advisory lock, `migrate_to_latest`.)"""
    path = database.engine.url.database if database.is_sqlite else None
    if not path or path == ":memory:":
        yield
        return
    # A lock file of its own: opening and closing the database file itself would drop
    # the POSIX locks SQLite holds on it in this process (see fcntl(2)).
    with open(f"{path}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
