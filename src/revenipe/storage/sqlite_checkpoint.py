"""SQLite's write-ahead log, copied back into the database file by a thread of its own
(docs/adr/0012).

SQLite checkpoints by itself in the commit that crosses its 1,000-page threshold: that
commit waited for the copy and two fsyncs, and one track in about a hundred took 15 to
35 ms instead of 0.8 ms (the p99). On a database file revenipe turns that off and
checkpoints here instead, every `INTERVAL_S` when something was written since the last
time (`Database.checkpoint`: the copy while writers go on, then a restart of the log at
a turn of every process's writers).

`stop` waits for a checkpoint under way: a database closed while its thread still
checkpointed had its writers' lock file opened again after it was closed (a file
descriptor leaked) and its pool used again after it was disposed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from revenipe.engine.errors import RevenipeError

INTERVAL_S = 0.2
"""How often the thread looks whether anything was written since it last checkpointed."""

_log = logging.getLogger(__name__)


class Checkpointed(Protocol):
    """What the thread needs of a database (`storage.database.Database`)."""

    def writes_so_far(self) -> int: ...

    def checkpoint(self) -> None: ...


class Checkpointer:
    """The checkpoint thread of one open database; it holds the database weakly (an
    unclosed database can still be collected, and its thread then ends)."""

    def __init__(self, database: Checkpointed) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_loop,
            args=(weakref.ref(database), self._stop),
            name="revenipe-sqlite-checkpoint",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """End the thread, waiting up to `timeout_s` for a checkpoint under way."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)


def _loop(database_ref: weakref.ref[Checkpointed], stop: threading.Event) -> None:
    checkpointed_at_writes = 0
    while not stop.wait(INTERVAL_S):
        database = database_ref()
        if database is None:
            return
        writes = database.writes_so_far()
        if writes != checkpointed_at_writes:
            checkpointed_at_writes = writes
            try:
                database.checkpoint()
            except (RevenipeError, sqlite3.Error, DBAPIError) as exc:
                # Busy or failing now: the log waits for the next turn, nothing is lost.
                _log.warning("SQLite checkpoint skipped: %s", exc)
        del database
