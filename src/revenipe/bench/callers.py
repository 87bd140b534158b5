"""What runs inside a bench worker process: one caller calling in a loop.

A caller is the raw-SQL limit (`sql`), a track's own statements without revenipe
(`track_sql`; with `decide`, decided by the engine), a track through the embedded API
(`track`), or a batch track of `batch_items` tracks of one customer (`batch`); a thread
group is several threads of one process tracking through one shared `Backend`.
Connections and backends are opened on first use and kept in the worker process for the
next jobs. Every call carries a fresh idempotency key (every batch item its own).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from revenipe.bench import sql_limit, track_sql
from revenipe.bench.pool import worker_state


@dataclass(frozen=True)
class CallerSpec:
    """Who calls what: picklable, sent to the worker processes."""

    kind: Literal["sql", "track_sql", "track", "batch"]
    url: str
    app_id: str = ""
    tracked_id: str = "credits"
    value: int = 1
    per_commit: int = 1
    """`track_sql` only: calls per transaction."""
    decide: bool = False
    """`track_sql` only: the engine decides which grants pay (`track_sql.open_caller`)."""
    keep_grants: bool = False
    """`track_sql` only, SQLite: decided on grants kept in memory (`track_sql.open_caller`)."""
    batch_items: int = 1
    """Items per call of a `batch` caller."""


@dataclass
class CallerRun:
    """One caller's measured loop: latencies in seconds and monotonic start/end times."""

    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    errors: int = 0
    refused: int = 0
    first_error: str | None = None


class _Caller(Protocol):
    def call(self, key: str, value: int, idempotency_key: str) -> bool: ...


class _TrackCaller:
    """Tracks through the embedded API, as an app opens it once per process (the bench
    created and migrated the database already)."""

    def __init__(self, spec: CallerSpec) -> None:
        from revenipe.embedded import Backend
        from revenipe.storage.database import open_database

        self.backend = Backend(open_database(spec.url, migrate=False))
        self.app = self.backend.app(spec.app_id)
        self.tracked_id = spec.tracked_id

    def call(self, key: str, value: int, idempotency_key: str) -> bool:
        result = self.app.track(key, self.tracked_id, value, idempotency_key=idempotency_key)
        return result.success

    def close(self) -> None:
        self.backend.close()


class _BatchCaller(_TrackCaller):
    """Batch tracks (`App.track_batch`): each call `batch_items` tracks of one customer,
    each item its own idempotency key; a call succeeds when every item did."""

    def __init__(self, spec: CallerSpec) -> None:
        super().__init__(spec)
        self.batch_items = spec.batch_items

    def call(self, key: str, value: int, idempotency_key: str) -> bool:
        from revenipe.services.usage.batch import BatchItem

        items = [
            BatchItem(key, self.tracked_id, value, f"{idempotency_key}.{i}")
            for i in range(self.batch_items)
        ]
        outcomes = self.app.track_batch(items)
        return all(o.result is not None and o.result.success for o in outcomes)


def _caller(spec: CallerSpec) -> _Caller:
    cache_key = (
        f"caller:{spec.kind}:{spec.per_commit}:{spec.decide}:{spec.keep_grants}:"
        f"{spec.batch_items}:{spec.url}:"
        f"{spec.app_id}:"
        f"{spec.tracked_id}"
    )
    cached: _Caller | None = worker_state.get(cache_key)
    if cached is not None:
        return cached
    caller: _Caller
    if spec.kind == "sql":
        caller = sql_limit.open_caller(spec.url)
    elif spec.kind == "track_sql":
        caller = track_sql.open_caller(
            spec.url,
            spec.app_id,
            spec.tracked_id,
            spec.per_commit,
            decide=spec.decide,
            keep_grants=spec.keep_grants,
        )
    elif spec.kind == "batch":
        caller = _BatchCaller(spec)
    else:
        caller = _TrackCaller(spec)
    worker_state[cache_key] = caller
    return caller


def run_calls(
    spec: CallerSpec,
    keys: list[str],
    tag: str,
    start_at: float = 0.0,
    duration: float | None = None,
    max_calls: int | None = None,
) -> CallerRun:
    """Call round-robin over `keys` from `start_at` (monotonic) for `duration` seconds
    or `max_calls` calls, whichever ends first."""
    run = CallerRun()
    _call_loop(_caller(spec), spec.value, keys, tag, start_at, duration, max_calls, run)
    return run


def run_thread_group(
    spec: CallerSpec,
    key_sets: list[list[str]],
    tag: str,
    start_at: float = 0.0,
    duration: float | None = None,
    max_calls: int | None = None,
) -> CallerRun:
    """`len(key_sets)` threads of this process sharing one caller (one `Backend`, as a
    web server's threads share theirs), thread i calling round-robin over `key_sets[i]`
    as `run_calls` does. Their latencies together, over the window from the first
    thread's start to the last one's end."""
    if spec.kind != "track":
        # The raw-SQL caller holds one connection: it is not shared between threads.
        raise ValueError("a thread group tracks through the embedded API only")
    caller = _caller(spec)
    runs = [CallerRun() for _ in key_sets]
    threads = [
        threading.Thread(
            target=_call_loop,
            args=(caller, spec.value, keys, f"{tag}-t{i}", start_at, duration, max_calls, run),
            name=f"bench-caller-{i}",
        )
        for i, (keys, run) in enumerate(zip(key_sets, runs, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return CallerRun(
        latencies=[latency for run in runs for latency in run.latencies],
        started=min(run.started for run in runs),
        ended=max(run.ended for run in runs),
        errors=sum(run.errors for run in runs),
        refused=sum(run.refused for run in runs),
        first_error=next((run.first_error for run in runs if run.first_error), None),
    )


def _call_loop(
    caller: _Caller,
    value: int,
    keys: list[str],
    tag: str,
    start_at: float,
    duration: float | None,
    max_calls: int | None,
    run: CallerRun,
) -> None:
    """The measured loop, filling `run` (which its caller owns)."""
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    run.started = time.monotonic()
    deadline = run.started + duration if duration is not None else float("inf")
    limit = max_calls if max_calls is not None else 1 << 62
    clock = time.perf_counter
    latencies = run.latencies
    count = len(keys)
    n = 0
    while n < limit:
        key = keys[n % count]
        begin = clock()
        try:
            ok = caller.call(key, value, f"{tag}-{n}")
        except Exception as exc:
            run.errors += 1
            if run.first_error is None:
                run.first_error = f"{type(exc).__name__}: {exc}"
        else:
            latencies.append(clock() - begin)
            if not ok:
                run.refused += 1
        n += 1
        if time.monotonic() >= deadline:
            break
    flush = getattr(caller, "flush", None)
    if flush is not None:
        flush()  # a caller that commits in batches commits what it holds
    run.ended = time.monotonic()
