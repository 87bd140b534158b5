"""The file lock revenipe's SQLite writers take turns at, across processes
(storage/sqlite_lock.py, docs/adr/0022): a writer gets it as soon as the other process
lets go (or dies), and one that got it after its deadline writes nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import revenipe
from revenipe import RevenipeError
from revenipe.storage import database as database_module
from revenipe.storage.sqlite_lock import SqliteWriterLock

from support import DEMO_CATALOG

HOLDER = """
import sys
from revenipe.storage.sqlite_lock import SqliteWriterLock
lock = SqliteWriterLock(sys.argv[1])
lock.acquire()
print("holding", flush=True)
sys.stdin.readline()  # let go when told (or when killed)
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "revenipe.db")


@pytest.fixture
def holder(database: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock until it reads a line."""
    process = _hold(database)
    yield process
    process.kill()
    process.wait(timeout=10)


def _hold(database: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def _let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"


def _acquire_in_thread(lock: SqliteWriterLock) -> threading.Event:
    got = threading.Event()

    def take() -> None:
        lock.acquire()
        got.set()

    threading.Thread(target=take, daemon=True).start()
    return got


def test_a_waiting_writer_gets_the_lock_when_the_other_process_lets_go(
    database: str, holder: subprocess.Popen[str]
) -> None:
    lock = SqliteWriterLock(database)
    got = _acquire_in_thread(lock)
    assert not got.wait(0.3), "took a lock another process holds"
    _let_go(holder)
    assert got.wait(10)
    # Held by this process's writer: another file description waits for it.
    other = SqliteWriterLock(database)
    other_got = _acquire_in_thread(other)
    assert not other_got.wait(0.3)
    lock.release()
    assert other_got.wait(10)
    other.release()
    lock.close()
    other.close()


def test_the_lock_of_a_process_killed_holding_it_is_free(
    database: str, holder: subprocess.Popen[str]
) -> None:
    lock = SqliteWriterLock(database)
    got = _acquire_in_thread(lock)
    assert not got.wait(0.3)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert got.wait(10)
    lock.release()
    lock.close()
    assert _acquire_in_thread(lock).wait(10), "closed, the lock file opens again"
    lock.release()
    lock.close()


def test_a_write_whose_turn_came_after_its_deadline_changes_nothing(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with revenipe.open(f"sqlite:///{database}") as backend:
        app = backend.app(backend.create_app("a", revenipe.load_catalog(DEMO_CATALOG)).app.id)
        holder = _hold(database)
        monkeypatch.setattr(database_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
        started = time.monotonic()  # before the timer: it lets go 0.6 s after this or later
        threading.Timer(0.6, _let_go, args=(holder,)).start()
        with pytest.raises(RevenipeError) as raised:
            app.track("alice", "credits", 1, idempotency_key="late")
        assert raised.value.code.value == "database_busy"
        assert time.monotonic() - started >= 0.6, "wrote while another process held the lock"
        monkeypatch.undo()
        # Nothing was written: the customer does not exist yet; the same key applies once.
        with backend.database.read() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM customers").scalar() == 0
        first = app.track("alice", "credits", 1, idempotency_key="late")
        assert first.success and not first.replayed
        holder.kill()
        holder.wait(timeout=10)
