"""The writers of one SQLite file, across processes, take turns at a file lock.

SQLite lets one writer in at a time and tells the others "locked"; they can only try
again later. Two server workers on one file did that through `BEGIN IMMEDIATE` polled
in steps of 0.1 to 1 ms: the worker that just committed took the lock again for its
next batch before the other woke, so the other's callers waited and a second worker
made tracks slower than one (docs/adr/0022). Now every revenipe writer of the file
first takes an exclusive `flock` on `<database file>-writer.lock`: a waiter sleeps in
the kernel and is woken when the holder lets go, so two workers alternate, each
writing the batch that gathered while the other wrote. The kernel lets go of the lock
of a process that died (SIGKILL included).

A `flock` wait has no time-out: the writer checks its deadline once it has the lock
and gives up then (nothing written), so a write never lands after its caller was told
it timed out. A writer holds the lock only for its own transaction (and its wait for
another program's writer, bounded by the busy time-out); the one wait without end is
behind a revenipe process stopped (SIGSTOP, a debugger) in the middle of a write,
which also holds SQLite's own lock (docs/adr/0022).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any


class SqliteWriterLock:
    """An exclusive lock shared by every revenipe process writing to one SQLite file.

    Writers of one process come here one at a time (they hold the process's own writer
    lock first); the lock belongs to the process's open file description, opened on
    first use, and again in a forked child (which must not share its parent's)."""

    def __init__(self, database_path: str) -> None:
        self._path = f"{database_path}-writer.lock"
        self._guard = threading.Lock()
        self._pid = -1
        self._fd = -1
        self._held = False

    def acquire(self) -> None:
        """Take the lock, sleeping while another process holds it."""
        with self._guard:
            if self._pid != os.getpid() or self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._pid, self._held = os.getpid(), False
            fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is let go while it sleeps
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (a lock held goes with it); the next write opens it again."""
        with self._guard:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd, self._held = -1, False


def begin_immediate(raw: Any, deadline: float) -> bool:
    """Take SQLite's own lock on the writer connection `raw` (its busy handler off) by
    `deadline`; False if another program's writer still held it then.

    Revenipe's writers in other processes were waited for already (`SqliteWriterLock`);
    another program's is waited for here, in steps of 0.1 to 1 ms, rather than in
    SQLite's busy handler, whose sleeps grow to 5, 10, 25, 50 ms and more: a writer
    that met another once or twice slept far longer than the other held the lock."""
    pause_s = 0.0001
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.001)


def is_locked(error: object) -> bool:
    """SQLite's "database is locked" (another writer holds the lock)."""
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
