"""SQLite's write-ahead log is checkpointed by a thread of its own, never inside a
commit (docs/adr/0012), and stays bounded while writers never pause."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import revenipe
from revenipe.bench import workload
from revenipe.storage.database import Database
from revenipe.storage.sqlite_checkpoint import INTERVAL_S as SQLITE_CHECKPOINT_INTERVAL_S
from revenipe.storage.sqlite_lock import SqliteWriterLock

RUN_S = 2.0
CHECKPOINT_THREAD = "revenipe-sqlite-checkpoint"


def _open(tmp_path: Path) -> tuple[revenipe.Backend, revenipe.App, Path]:
    path = tmp_path / "wal.db"
    backend = revenipe.open(f"sqlite:///{path}")
    app = backend.app(backend.create_app("wal").app.id)
    app.apply_catalog(workload.catalog())
    workload.add_customers(app, workload.customer_names("c", 4))
    return backend, app, Path(f"{path}-wal")


def _track(app: revenipe.App, i: int) -> None:
    result = app.track(f"c-{i % 4:06d}", "credits", 2, idempotency_key=f"k-{i}")
    assert result.success, result


def test_commits_do_not_checkpoint(tmp_path: Path) -> None:
    backend, _app, _wal = _open(tmp_path)
    with backend.database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    threads = [t.name for t in threading.enumerate()]
    assert "revenipe-sqlite-checkpoint" in threads
    backend.close()


def _frames_in_log(backend: revenipe.Backend) -> int:
    with backend.database.engine.connect() as conn:
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        conn.rollback()
    return int(row[1])


def test_the_log_stays_bounded_under_nonstop_writes(tmp_path: Path) -> None:
    backend, app, wal = _open(tmp_path)
    # What one track adds to the log, measured right after the log was restarted.
    _track(app, 0)
    backend.database.checkpoint()
    _track(app, 1)
    frames_per_track = _frames_in_log(backend)
    assert frames_per_track > 0

    tracks = 2
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        _track(app, tracks)
        tracks += 1
    frames = _frames_in_log(backend)
    page_size = 4096
    wal_size = os.path.getsize(wal)
    backend.close()

    assert RUN_S / SQLITE_CHECKPOINT_INTERVAL_S >= 5
    # A log that is never restarted holds every frame written since it was opened;
    # ours starts again every few hundred milliseconds.
    written = tracks * frames_per_track
    assert frames < 0.5 * written, (frames, tracks, frames_per_track)
    assert wal_size < 0.5 * written * page_size, (wal_size, tracks, frames_per_track)


def test_the_restart_step_waits_for_other_processes_writers_at_their_lock(
    tmp_path: Path,
) -> None:
    """The RESTART step takes the writers' file lock (docs/adr/0012, revised): it never
    waits for another process's writer inside SQLite's busy handler while holding the
    log's write lock, which stalled the other worker's writes for up to 100 ms."""
    backend, app, _wal = _open(tmp_path)
    _track(app, 0)
    other = SqliteWriterLock(str(tmp_path / "wal.db"))  # as another process holds it
    other.acquire()
    done = threading.Event()
    checkpointer = threading.Thread(
        target=lambda: (backend.database.checkpoint(), done.set()), daemon=True
    )
    try:
        checkpointer.start()
        assert not done.wait(0.5), "the RESTART step ran while another writer held the lock"
    finally:
        other.release()
    checkpointer.join(10)
    assert done.is_set()
    other.close()
    backend.close()


def _open_descriptors_of(path: Path) -> int:
    target = os.path.realpath(path)
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            continue  # closed meanwhile
    return found


def test_close_waits_for_a_checkpoint_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database closed while its checkpoint thread was checkpointing: the thread went
    on after `close`, opened the writers' lock file again and left it open."""
    backend, app, _wal = _open(tmp_path)
    database = backend.database
    entered = threading.Event()
    checkpoint = type(database).checkpoint

    def slow_checkpoint(self: Database) -> None:
        if threading.current_thread().name == CHECKPOINT_THREAD and self is database:
            entered.set()
            time.sleep(0.3)
        checkpoint(self)

    monkeypatch.setattr(type(database), "checkpoint", slow_checkpoint)
    _track(app, 0)  # something for the thread to checkpoint
    assert entered.wait(5)
    backend.close()
    time.sleep(0.6)  # past the slow checkpoint, had `close` not waited for it
    assert _open_descriptors_of(tmp_path / "wal.db-writer.lock") == 0
