"""A few long-lived caller processes, so that concurrent callers are not held by the GIL.

Each process is started once per bench run (spawned: nothing inherited from the parent
but its arguments) and runs jobs sent over a pipe: a top-level function and its
arguments. `run_each` hands one job to each of the first N processes at the same time
and waits for all answers. Processes keep what their jobs open (connections, backends)
in `worker_state` between jobs, until a `close_worker_state` job.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

worker_state: dict[str, Any] = {}
"""What jobs keep open inside one worker process, by key of their choosing."""


class WorkerError(RuntimeError):
    """A job raised in a worker process (the message carries its traceback)."""


def close_worker_state() -> None:
    """Close everything jobs left open in this process (a job like any other)."""
    for value in list(worker_state.values()):
        close = getattr(value, "close", None)
        if callable(close):
            # Best effort: the database may be gone already.
            with contextlib.suppress(Exception):
                close()
    worker_state.clear()


def _ready() -> None:
    """A job that does nothing: its answer says the process is up."""


def _serve(conn: Connection, preload: Sequence[str]) -> None:
    for module in preload:
        importlib.import_module(module)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            close_worker_state()
            return
        function, args = message
        try:
            conn.send(("ok", function(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


Job = tuple[Callable[..., Any], tuple[Any, ...]]


class WorkerPool:
    """`size` spawned processes, each running one job at a time. They import the
    `preload` modules as soon as they start, while the parent goes on."""

    def __init__(self, size: int, preload: Sequence[str] = ()) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(size):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, tuple(preload)), daemon=True)
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)

    @property
    def size(self) -> int:
        return len(self._pipes)

    def run_each(self, jobs: Sequence[Job]) -> list[Any]:
        """Run job i in process i, all at once; their results in order."""
        if len(jobs) > self.size:
            raise ValueError(f"{len(jobs)} jobs for {self.size} worker processes")
        for pipe, (function, args) in zip(self._pipes, jobs, strict=False):
            pipe.send((function, args))
        results = []
        failures = []
        for pipe in self._pipes[: len(jobs)]:
            status, value = pipe.recv()
            if status == "ok":
                results.append(value)
            else:
                failures.append(value)
        if failures:
            raise WorkerError("a bench worker failed:\n" + "\n".join(failures))
        return results

    def run_everywhere(self, function: Callable[..., Any], *args: Any) -> list[Any]:
        return self.run_each([(function, args)] * self.size)

    def wait_ready(self) -> None:
        """Return once every process has started and imported its preload modules."""
        self.run_everywhere(_ready)

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
