"""Group commit: the writes of many concurrent callers in shared transactions.

A caller hands over a request and waits for its own answer; whoever finds no batch
running takes every request waiting at that moment (its own first among them) and runs
them together through `run_batch`, which writes them in one transaction and answers
each one. Nobody waits for a timer: a caller alone runs its request at once, in its own
thread; under load, requests that arrive while a batch runs form the next batch.

This is flat combining (one thread at a time works for all), chosen over a dedicated
writer thread so that a single caller pays no thread hand-off. Callers on an event loop
(`submit_async`) cannot lead (they must not block the loop): each lane has a thread of
its own, started on first use and idle in between, that leads for them, and the
answers of one batch reach each event loop in one wake-up. The lanes
of a `GroupCommitter` are independent (on PostgreSQL each lane has its own
connection); requests with the same `lane_key` always meet in the same lane, in the
order they were submitted, so one customer's tracks are decided one after another.

`run_batch` answers every request of its batch, each with a result or the exception
that request alone raised; an exception out of `run_batch` itself (the commit failed)
is every request's answer. A request is answered only after its batch returned, so an
answer never precedes the commit that holds it (docs/adr/0014).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from revenipe.engine.errors import InvariantViolation

Request = TypeVar("Request")
Result = TypeVar("Result")

MAX_BATCH = 256
"""At most this many requests per transaction: a bound on how long one batch holds the
write lock, and on what one failed commit has to answer."""


class _Signal:
    """How a blocked caller is woken: one lock, taken at birth, that `wait` takes again
    and `set` gives back (a `set` before the `wait` is kept). The protocol never sets it
    twice without a `wait` between (a caller is handed the lane only while it is queued
    unanswered, is answered once, and is never signalled after that): a second `set`
    would fail loudly instead of being lost.

    A `threading.Event` is a condition over locks: made, set and waited on, it took 16 %
    of a 16-thread group of SQLite tracks' time under the GIL (py-spy). This lock does
    the same for 8 % more tracks a second with 8 % less CPU a track (docs/adr/0015)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def wait(self) -> None:
        """Block until `set`, and be ready to block again."""
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()


_LOOP_CALLER = _Signal()
"""The `done` of every event-loop caller's waiter: they await a future instead, and
nothing ever waits on or sets this one."""


@dataclass(eq=False, slots=True)
class _Waiter(Generic[Request, Result]):
    request: Request
    done: _Signal = field(default_factory=_Signal)
    """Set when a blocked caller is answered or handed the lane."""
    lead: bool = False
    """Set when the previous leader hands this waiter the lane: it runs the next batch."""
    result: Result | None = None
    error: BaseException | None = None
    answered: bool = False
    future: asyncio.Future[None] | None = None
    """An event-loop caller's: resolved when answered (the waiter never leads)."""


class _Lane(Generic[Request, Result]):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Waiter[Request, Result]] = []
        self.busy = False
        """A batch of this lane runs, or its leader is about to take the next one."""
        self.wake_leader: threading.Condition | None = None
        """The lane's own leader thread waits on it (event-loop callers; under `lock`)."""
        self.leader_called = False


class GroupCommitter(Generic[Request, Result]):
    """Runs requests of many threads in batches, `lanes` batches at a time at most."""

    def __init__(
        self,
        run_batch: Callable[[int, Sequence[Request]], Sequence[Result | BaseException]],
        *,
        lanes: int = 1,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if lanes < 1 or max_batch < 1:
            raise ValueError("a group committer needs at least one lane and batch size 1")
        self._run_batch = run_batch
        self._lanes: list[_Lane[Request, Result]] = [_Lane() for _ in range(lanes)]
        self._max_batch = max_batch

    def submit(self, request: Request, lane_key: Hashable = None) -> Result:
        """Run `request` in the next batch of its lane; its result once committed."""
        lane = self._lane(lane_key)
        with lane.lock:
            alone = not lane.busy  # then nobody waits either: see `_enqueue`
            lane.busy = True
        if alone:
            return self._run_alone(lane, request)
        waiter: _Waiter[Request, Result] = _Waiter(request)
        if self._enqueue(lane, waiter):
            self._lead(lane, waiter)
        while not waiter.answered:
            try:
                waiter.done.wait()
            except BaseException:  # KeyboardInterrupt, or a signal handler's exception
                self._abandon(lane, waiter)
                raise
            if waiter.lead and not waiter.answered:
                self._lead(lane, waiter)
        return _outcome(waiter)

    def _abandon(self, lane: _Lane[Request, Result], waiter: _Waiter[Request, Result]) -> None:
        """A blocked caller leaves its wait with an exception: its request leaves the
        queue unless a batch took it already (then it runs, and its answer is nobody's),
        and if it had been handed the lane, the lane goes on to the next caller. Else
        the lane would wait for a leader that is gone, and every later caller with it."""
        with lane.lock:
            if waiter in lane.queue:
                lane.queue.remove(waiter)
            handed = waiter.lead and not waiter.answered
        if handed:
            self._hand_on(lane, leading_for_loops=False)

    async def submit_async(self, request: Request, lane_key: Hashable = None) -> Result:
        """`submit` for a caller on an event loop: it awaits instead of blocking; the
        lane's own thread leads the batch when no batch is running."""
        lane = self._lane(lane_key)
        waiter: _Waiter[Request, Result] = _Waiter(request, _LOOP_CALLER)
        waiter.future = asyncio.get_running_loop().create_future()
        if self._enqueue(lane, waiter):
            self._call_leader(lane)
        await waiter.future
        return _outcome(waiter)

    def _call_leader(self, lane: _Lane[Request, Result]) -> None:
        """Have the lane's own thread lead (the lane is busy: the caller took it)."""
        with lane.lock:
            if lane.wake_leader is None:
                lane.wake_leader = threading.Condition(lane.lock)
                threading.Thread(
                    target=self._leader_thread,
                    args=(lane, lane.wake_leader),
                    name="revenipe-group-commit",
                    daemon=True,
                ).start()
            lane.leader_called = True
            lane.wake_leader.notify()

    def _leader_thread(self, lane: _Lane[Request, Result], wake: threading.Condition) -> None:
        while True:
            with lane.lock:
                while not lane.leader_called:
                    wake.wait()
                lane.leader_called = False
            self._lead(lane, None)

    def _lane(self, lane_key: Hashable) -> _Lane[Request, Result]:
        if len(self._lanes) == 1:
            return self._lanes[0]
        return self._lanes[hash(lane_key) % len(self._lanes)]

    def _enqueue(self, lane: _Lane[Request, Result], waiter: _Waiter[Request, Result]) -> bool:
        """Queue `waiter`; True when the caller must lead (no batch was running)."""
        with lane.lock:
            lane.queue.append(waiter)
            if lane.busy:
                return False
            lane.busy = True
            return True

    def _run_alone(self, lane: _Lane[Request, Result], request: Request) -> Result:
        """A caller that found its lane idle: its request is a batch of its own, run
        with no waiter and no signal to wake (what a lone caller pays, every call: about
        7% of a SQLite track, docs/performance.md); then the lane is handed on, as
        `_lead` hands it on, to whoever came meanwhile."""
        try:
            outcomes = self._run_batch(self._lanes.index(lane), [request])
        finally:
            self._hand_on(lane, leading_for_loops=False)
        if len(outcomes) != 1:
            raise InvariantViolation(f"a batch of 1 request got {len(outcomes)} answers")
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        return outcomes[0]

    def _hand_on(self, lane: _Lane[Request, Result], *, leading_for_loops: bool) -> bool:
        """After a leader's own request was answered (or, for the lane's own thread,
        after each batch): hand the lane to the oldest blocked caller waiting, or to the
        lane's own thread if only event-loop callers wait, or leave it idle. True when
        the lane's own thread (`leading_for_loops`) should lead on instead."""
        with lane.lock:
            successor = next((w for w in lane.queue if w.future is None), None)
            if successor is None and not lane.queue:
                lane.busy = False
                return False
            if successor is None and leading_for_loops:
                return True  # only event-loop callers wait: keep leading for them
            if successor is not None:
                successor.lead = True
        if successor is None:
            self._call_leader(lane)  # the lane stays busy: its thread leads next
        else:
            successor.done.set()
        return False

    def _lead(self, lane: _Lane[Request, Result], own: _Waiter[Request, Result] | None) -> None:
        """Run batches until `own` is answered (the lane's own thread: until only
        blocked callers wait), then hand the lane to the oldest blocked caller waiting,
        or leave it idle. Event-loop callers never lead: someone leads for them. A
        blocked caller answered while only event-loop callers wait hands the lane to
        the lane's own thread and returns: under a steady flow of event-loop callers
        it would otherwise lead on, its own answer held back until the flow stopped."""
        if own is not None:
            own.lead = False
        while True:
            with lane.lock:
                batch = lane.queue[: self._max_batch]
                del lane.queue[: len(batch)]
                if not batch:
                    lane.busy = False
                    return
            self._run(lane, batch)
            if own is None or own.answered:
                if self._hand_on(lane, leading_for_loops=own is None):
                    continue
                return

    def _run(self, lane: _Lane[Request, Result], batch: list[_Waiter[Request, Result]]) -> None:
        index = self._lanes.index(lane)
        try:
            outcomes: Sequence[Result | BaseException] = self._run_batch(
                index, [w.request for w in batch]
            )
            if len(outcomes) != len(batch):
                raise InvariantViolation(
                    f"a batch of {len(batch)} requests got {len(outcomes)} answers"
                )
        except BaseException as exc:  # the whole batch failed: each request's answer
            outcomes = [exc] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiter.error = outcome
            else:
                waiter.result = outcome
            waiter.answered = True
            if waiter.future is not None:
                by_loop.setdefault(waiter.future.get_loop(), []).append(waiter.future)
            else:
                waiter.done.set()
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a caller that gave up (cancelled) has its future done
            future.set_result(None)


def _outcome(waiter: _Waiter[Request, Result]) -> Result:
    if waiter.error is not None:
        raise waiter.error
    return waiter.result  # type: ignore[return-value]
