"""PostgreSQL: each group-commit lane keeps the connection its batches run on.

A lane runs one batch at a time (docs/adr/0015), so the connection of its last batch
is free for its next one. Checking a connection out of SQLAlchemy's pool and back in
for every batch cost a lone in-process track about a tenth of the process's CPU (the
checkout, the reset on return, a new `Connection`); SQLite's writer keeps its one
connection for the same reason (`Database._sqlite_write`).

A lane hands its connection back to the pool and checks one out again once the
connection's plans are due to be made again (`plan_refresh.PLAN_REFRESH_S` after they
last were; without prepared statements, that long after the lane checked it out).
Everything the pool does at a checkout so still happens as often as before: plans made
again, a connection the server dropped replaced, an old one recycled. A batch that
raises hands its connection back at once (the pool resets it, or throws it away if it
is broken), and the connections the other lanes keep idle with it. A dropped
connection met anywhere also throws away every pooled one made before it
(`Database._connection_lost`): after a restart, the first transaction to meet a dead
connection fails, and the ones after it run on new connections.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from sqlalchemy import Connection, Engine

from revenipe.storage import plan_refresh


class LaneConnections:
    """The connection each lane keeps between its batches."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._kept: dict[int, tuple[Connection, float]] = {}
        """Per lane: its idle connection and when it was checked out."""
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def transaction(self, lane: int) -> Iterator[Connection]:
        """One transaction on the lane's connection: committed if the block ends
        normally, rolled back if it raises (and the connection handed back)."""
        conn, checked_out_at = self._take(lane)
        try:
            conn.begin()
            yield conn
            conn.commit()
        except BaseException:
            # The error raised is the batch's (or the commit's), not one of a rollback
            # on a connection the server dropped.
            try:
                with contextlib.suppress(Exception):
                    conn.rollback()
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
                self.hand_back()
            raise
        self._keep(lane, conn, checked_out_at)

    def hand_back(self) -> None:
        """Give every idle kept connection back to the pool (a failed batch;
        `Database.close`; a test that runs something on each pooled connection). A
        lane's next batch checks one out again."""
        with self._lock:
            kept, self._kept = self._kept, {}
        for conn, _ in kept.values():
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Hand back every connection, and from now on each one a batch ends with."""
        self._closed = True
        self.hand_back()

    def _take(self, lane: int) -> tuple[Connection, float]:
        with self._lock:
            kept = self._kept.pop(lane, None)
        now = time.monotonic()
        if kept is not None:
            conn, checked_out_at = kept
            if not conn.invalidated:  # (only a committed batch's connection is kept)
                made_at = plan_refresh.plans_made_at(conn.connection.info, checked_out_at)
                if now - made_at < plan_refresh.PLAN_REFRESH_S:
                    return conn, checked_out_at
            with contextlib.suppress(Exception):
                conn.close()
        return self._engine.connect(), now

    def _keep(self, lane: int, conn: Connection, checked_out_at: float) -> None:
        with self._lock:
            if not self._closed:
                self._kept[lane] = (conn, checked_out_at)
                return
        with contextlib.suppress(Exception):
            conn.close()
