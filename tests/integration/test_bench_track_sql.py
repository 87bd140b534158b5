"""The bench's `track_sql` caller runs the statements a real track runs, no more, no
fewer: its throughput is the database's share of a track only while that holds.

Both are traced on SQLite (the driver's trace shows each statement as run, values
inlined); values are replaced by `?`, so what is compared is the statements' text:
tables, columns, conditions, in order.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import revenipe
from revenipe.bench import track_sql, workload
from revenipe.services.customers import CustomerState

_VALUE = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|\bNULL\b|\bTRUE\b|\bFALSE\b")


def _shape(statement: str) -> str:
    return " ".join(_VALUE.sub("?", statement).split())


def _traced(conn: sqlite3.Connection, run: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return [_shape(s) for s in seen if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT"))]


@contextlib.contextmanager
def _real_and_floor(
    tmp_path: Path,
) -> Iterator[tuple[str, revenipe.App, str, str, sqlite3.Connection]]:
    """The bench's app in a new SQLite database with two customers set up alike (one for
    real tracks, one for the floor), and the writer's driver connection to trace."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    with revenipe.open(url) as backend:
        app = backend.app(backend.create_app("bench", workload.catalog()).app.id)
        real_customer, floor_customer = workload.add_customers(app, ["real", "floor"])
        writer = backend.database._sqlite_writer_conn
        assert writer is not None
        raw = writer.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        yield url, app, real_customer, floor_customer, raw


def test_the_floor_runs_a_real_tracks_statements(tmp_path: Path) -> None:
    """A process's first track of a customer looks it up by external id, the later ones
    by the id it remembered (`services.context.CustomerIds`): the floor does both."""
    with _real_and_floor(tmp_path) as (url, app, real_customer, floor_customer, raw):

        def track(key: str) -> Callable[[], object]:
            return lambda: app.track(
                real_customer, workload.TRACKED_ID, workload.TRACK_VALUE, idempotency_key=key
            )

        # The first track draws on the plan's grant alone, as the floor's first call does.
        real_first = _traced(raw, track("w0"))
        # Past the plan and bonus grants: from the 4th track on, it draws from the pack.
        for n in range(1, 4):
            track(f"w{n}")()
        real_later = _traced(raw, track("k"))
    floor = track_sql.open_caller(url, app.app_id, workload.TRACKED_ID)
    try:
        caller = floor
        assert isinstance(caller, track_sql.SqliteTrackStatements)
        floor_first = _traced(
            caller.conn, lambda: caller.call(floor_customer, workload.TRACK_VALUE, "w0")
        )
        floor_later = _traced(
            caller.conn, lambda: caller.call(floor_customer, workload.TRACK_VALUE, "k")
        )
    finally:
        floor.close()
    assert len(real_first) == len(real_later) == 5
    assert "c.external_id = ?" in real_first[0]
    assert "c.id = ?" in real_later[0]
    assert floor_first == real_first
    assert floor_later == real_later


def test_the_grouped_floor_commits_every_batch_and_what_is_left(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    with revenipe.open(url) as backend:
        app = backend.app(backend.create_app("bench", workload.catalog()).app.id)
        (customer,) = workload.add_customers(app, ["floor"])
        before = app.state(customer)
    floor = track_sql.open_caller(url, app.app_id, workload.TRACKED_ID, batch=4)
    try:
        for n in range(6):
            assert floor.call(customer, workload.TRACK_VALUE, f"k{n}")
        floor.flush()
    finally:
        floor.close()
    with revenipe.open(url) as backend:
        after = backend.app(app.app_id).state(customer)
        with backend.database.engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_events").scalar()
    assert count == 6
    assert _remaining(before) - _remaining(after) == 6 * workload.TRACK_VALUE


def _remaining(state: CustomerState) -> int:
    (credits,) = [key for key in state.usage_keys if key.key_id == workload.TRACKED_ID]
    return credits.remaining


def test_the_floor_checkpoints_beside_its_commits_as_revenipe_does(tmp_path: Path) -> None:
    """A floor whose commits copied the log back (SQLite's default) would pay fsyncs that
    revenipe's tracks never pay (`storage/sqlite_checkpoint.py`)."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    with revenipe.open(url) as backend:
        app = backend.app(backend.create_app("bench", workload.catalog()).app.id)
        (customer,) = workload.add_customers(app, ["floor"])
    floor = track_sql.open_caller(url, app.app_id, workload.TRACKED_ID)
    try:
        assert isinstance(floor, track_sql.SqliteTrackStatements)
        assert floor.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for n in range(20):
            assert floor.call(customer, workload.TRACK_VALUE, f"k{n}")
        seen = floor.checkpointer.checkpoints
        deadline = time.monotonic() + 10
        while floor.checkpointer.checkpoints == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert floor.checkpointer.checkpoints > seen
        assert floor.call(customer, workload.TRACK_VALUE, "after")
        probe = sqlite3.connect(tmp_path / "bench.db")
        try:
            _busy, log_frames, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            probe.close()
    finally:
        floor.close()
    # The log started again from its beginning: it holds the last call's pages (or fewer,
    # if the thread checkpointed again), not the 21 calls' hundreds.
    assert log_frames < 50


@pytest.mark.parametrize("keep_grants", [False, True], ids=["decided", "grants_kept"])
def test_the_decided_floor_writes_what_real_tracks_write(tmp_path: Path, keep_grants: bool) -> None:
    """With `decide`, the engine picks the grants: a customer's 2nd track draws on the
    plan's grant and the bonus, its 4th on the bonus and the pack, as a real track's do;
    statement for statement, and the same rows (the bench's ceiling of a track that keeps
    its rules in the engine). With `keep_grants`, the same rows without reading the grants
    after the first call."""
    keys = [f"k{n}" for n in range(6)]
    with _real_and_floor(tmp_path) as (url, app, real_customer, floor_customer, raw):
        real = [
            _traced(
                raw,
                functools.partial(
                    app.track,
                    real_customer,
                    workload.TRACKED_ID,
                    workload.TRACK_VALUE,
                    idempotency_key=key,
                ),
            )
            for key in keys
        ]
    floor = track_sql.open_caller(
        url, app.app_id, workload.TRACKED_ID, decide=True, keep_grants=keep_grants
    )
    try:
        assert isinstance(floor, track_sql.SqliteTrackStatements)
        caller = floor
        decided = [
            _traced(
                caller.conn,
                functools.partial(caller.call, floor_customer, workload.TRACK_VALUE, key),
            )
            for key in keys
        ]
    finally:
        floor.close()
    assert [len(statements) for statements in real] == [5, 7, 5, 7, 5, 5]
    if keep_grants:
        # After the first call: the same statements less the grants' read.
        grants_read = real[0][1]
        assert grants_read.startswith("SELECT id, entitlement_id,")
        real = real[:1] + [[s for s in statements if s != grants_read] for statements in real[1:]]
        assert [len(statements) for statements in real] == [5, 6, 4, 6, 4, 4]
    assert decided == real
    with revenipe.open(url) as backend, backend.database.engine.connect() as conn:

        def written(external_id: str) -> list[tuple[object, ...]]:
            return [
                tuple(row)
                for row in conn.exec_driver_sql(
                    "SELECT g.entitlement_id, l.kind, l.amount, l.balance_after, "
                    "u.idempotency_key, u.requested, u.consumed, u.remaining, u.success "
                    "FROM ledger_entries l JOIN grants g ON g.id = l.grant_id "
                    "JOIN usage_events u ON u.id = l.usage_event_id "
                    "JOIN customers c ON c.id = u.customer_id "
                    "WHERE c.external_id = ? ORDER BY l.id",
                    (external_id,),
                )
            ]

        assert written(floor_customer) == written(real_customer)
        assert len(written(real_customer)) == 8
