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

A caller's thread can be interrupted anywhere (Ctrl-C, or a signal handler that raises:
a time-out by `SIGALRM`, say), also while it leads. Whoever holds a lane is named in it
(`_Lane.leader`), and every step that gives the lane away first checks that it still
holds it, so an interrupted leader can always finish what it left: the waiters of a
batch it had not started go back to the head of the queue, those of a batch it had
started are answered, and the lane goes on to the next caller (`_give_back`). Without
that, every later caller of the lane waited for a leader that was gone.
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
    and `set` gives back (a `set` before the `wait` is kept). A `set` while one is kept
    changes nothing: a caller always looks at its state (answered? handed the lane?)
    after a wake-up, and one wake-up shows it everything set before it. Repeating a
    wake-up is what lets an interrupted leader finish a hand-over safely (it may then
    set a signal at the same time as the lane's new holder: one of them releases).

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
        if self._lock.locked():
            # Not `contextlib.suppress`: its two calls, on every wake-up.
            try:  # noqa: SIM105
                self._lock.release()
            except RuntimeError:  # another setter released it first
                pass


_LOOP_CALLER = _Signal()
"""The `done` of every event-loop caller's waiter: they await a future instead, and
nothing ever waits on or sets this one."""


_LANE_THREAD = object()
"""What holds a lane (`_Lane.leader`) while the lane's own thread leads it."""


@dataclass(eq=False, slots=True)
class _Waiter(Generic[Request, Result]):
    request: Request
    done: _Signal = field(default_factory=_Signal)
    """Set when a blocked caller is answered or handed the lane."""
    result: Result | None = None
    error: BaseException | None = None
    answered: bool = False
    future: asyncio.Future[None] | None = None
    """An event-loop caller's: resolved when answered (the waiter never leads)."""


@dataclass(eq=False, slots=True)
class _Batch(Generic[Request, Result]):
    """The waiters a leader took from the queue, and how far it got with them."""

    waiters: list[_Waiter[Request, Result]] = field(default_factory=list)
    started: bool = False
    """`run_batch` was (about to be) called: the requests may have been written."""
    outcomes: Sequence[Result | BaseException] | None = None


class _Lane(Generic[Request, Result]):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Waiter[Request, Result]] = []
        self.leader: object | None = None
        """Who holds the lane (runs its batches, or is about to): a blocked caller's
        waiter, a caller alone's token, `_LANE_THREAD`; None when idle. Changed under
        `lock`, and only by whoever holds the lane (or takes it idle)."""
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
        """Run `request` in the next batch of its lane; its result once committed.

        A caller that finds its lane idle runs its request as a batch of its own, with
        no waiter and no signal to wake (what a lone caller pays, every call: about 7%
        of a SQLite track, docs/performance.md); then it hands the lane on, as `_lead`
        does, to whoever came meanwhile."""
        lane = self._lane(lane_key)
        alone: object | None = object()
        try:
            with lane.lock:
                if lane.leader is None:
                    lane.leader = alone
            if lane.leader is alone:
                outcomes = self._run_batch(self._lanes.index(lane), [request])
                self._hand_on(lane, alone, leading_for_loops=False)
            else:
                alone = None
        except BaseException:
            if alone is not None:
                self._give_back(lane, alone)
            raise
        if alone is None:
            return self._wait(lane, request)
        if len(outcomes) != 1:
            raise InvariantViolation(f"a batch of 1 request got {len(outcomes)} answers")
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        return outcomes[0]

    def _wait(self, lane: _Lane[Request, Result], request: Request) -> Result:
        """Queue `request` behind a running batch, and wait for its answer; or, handed
        the lane meanwhile, lead."""
        waiter: _Waiter[Request, Result] = _Waiter(request)
        try:
            if self._enqueue(lane, waiter, waiter):
                self._lead(lane, waiter)
            while not waiter.answered:
                waiter.done.wait()
                if lane.leader is waiter and not waiter.answered:
                    self._lead(lane, waiter)
        except BaseException:  # KeyboardInterrupt, or a signal handler's exception
            self._abandon(lane, waiter)
            raise
        return _outcome(waiter)

    def _abandon(self, lane: _Lane[Request, Result], waiter: _Waiter[Request, Result]) -> None:
        """A blocked caller leaves with an exception: its request leaves the queue unless
        a batch took it already (then it runs, and its answer is nobody's), and a lane it
        held goes on to the next caller."""
        with lane.lock:
            if waiter in lane.queue:
                lane.queue.remove(waiter)
        self._give_back(lane, waiter)

    def _give_back(self, lane: _Lane[Request, Result], me: object) -> None:
        """`me` leaves on an exception: if it holds the lane, the lane goes on; if it
        does not, whoever holds it is woken again, in case `me` was interrupted handing
        it over (a wake-up too many is harmless: `_Signal`). Begun again if interrupted
        again while it works, then that exception is raised (a second interrupt before
        it starts, a double Ctrl-C, is not covered)."""
        interrupted: BaseException | None = None
        while True:
            try:
                with lane.lock:
                    held = lane.leader is me  # nobody else can give it to `me` now
                if held:
                    self._hand_on(lane, me, leading_for_loops=False)
                else:
                    self._wake_holder(lane)
                break
            except BaseException as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def _wake_holder(self, lane: _Lane[Request, Result]) -> None:
        with lane.lock:
            holder = lane.leader
        if holder is _LANE_THREAD:
            self._call_leader(lane)
        elif isinstance(holder, _Waiter) and not holder.answered:
            holder.done.set()

    async def submit_async(self, request: Request, lane_key: Hashable = None) -> Result:
        """`submit` for a caller on an event loop: it awaits instead of blocking; the
        lane's own thread leads the batch when no batch is running."""
        lane = self._lane(lane_key)
        waiter: _Waiter[Request, Result] = _Waiter(request, _LOOP_CALLER)
        waiter.future = asyncio.get_running_loop().create_future()
        try:
            if self._enqueue(lane, waiter, _LANE_THREAD):
                self._call_leader(lane)
        except BaseException:  # interrupted between taking the lane and calling its thread
            self._wake_holder(lane)
            raise
        await waiter.future
        return _outcome(waiter)

    def _call_leader(self, lane: _Lane[Request, Result]) -> None:
        """Have the lane's own thread lead (it holds the lane: `_LANE_THREAD`)."""
        with lane.lock:
            if lane.wake_leader is None:
                wake = threading.Condition(lane.lock)
                threading.Thread(
                    target=self._leader_thread,
                    args=(lane, wake),
                    name="revenipe-group-commit",
                    daemon=True,
                ).start()
                # Named once its thread runs: a start cut short by an interrupt leaves
                # the next call to start one, not a condition nobody waits on.
                lane.wake_leader = wake
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

    def _enqueue(
        self, lane: _Lane[Request, Result], waiter: _Waiter[Request, Result], leader: object
    ) -> bool:
        """Queue `waiter`; True when the lane was idle, and is now held by `leader`."""
        with lane.lock:
            lane.queue.append(waiter)
            if lane.leader is not None:
                return False
            lane.leader = leader
            return True

    def _hand_on(
        self, lane: _Lane[Request, Result], me: object, *, leading_for_loops: bool
    ) -> bool:
        """If `me` holds the lane (else nothing, and False): hand it to the oldest blocked
        caller waiting, or to the lane's own thread if only event-loop callers wait, or
        leave it idle. True when the lane's own thread (`leading_for_loops`) should lead
        on instead."""
        with lane.lock:
            if lane.leader is not me:
                return False
            successor = next((w for w in lane.queue if w.future is None), None)
            if successor is None and not lane.queue:
                lane.leader = None
                return False
            if successor is None and leading_for_loops:
                return True  # only event-loop callers wait: keep leading for them
            lane.leader = _LANE_THREAD if successor is None else successor
        if successor is None:
            self._call_leader(lane)
        else:
            successor.done.set()
        return False

    def _lead(self, lane: _Lane[Request, Result], own: _Waiter[Request, Result] | None) -> None:
        """Run batches until `own` is answered (the lane's own thread: until only
        blocked callers wait), then hand the lane to the oldest blocked caller waiting,
        or leave it idle. Event-loop callers never lead: someone leads for them. A
        blocked caller answered while only event-loop callers wait hands the lane to
        the lane's own thread and returns: under a steady flow of event-loop callers
        it would otherwise lead on, its own answer held back until the flow stopped.
        Nothing, if the lane is not (or no longer) `own`'s (the lane's own thread,
        called once too often)."""
        me = _LANE_THREAD if own is None else own
        while True:
            batch: _Batch[Request, Result] = _Batch()
            try:
                with lane.lock:
                    if lane.leader is not me:
                        return
                    batch.waiters = lane.queue[: self._max_batch]
                    del lane.queue[: len(batch.waiters)]
                    if not batch.waiters:
                        lane.leader = None
                        return
                self._run(lane, batch)
            except BaseException as exc:
                self._finish(lane, batch, exc)
                raise
            if own is None or own.answered:
                if self._hand_on(lane, me, leading_for_loops=own is None):
                    continue
                return

    def _finish(
        self, lane: _Lane[Request, Result], batch: _Batch[Request, Result], exc: BaseException
    ) -> None:
        """A leader interrupted by `exc` with `batch` in hand: a batch not started goes
        back to the head of the queue (nothing of it ran); every waiter of a started
        one is answered, with its outcome if the batch returned, else with `exc` (its
        transaction may or may not have committed). Begun again if interrupted again
        while it works."""
        while True:
            try:
                if not batch.started:
                    with lane.lock:
                        back = [w for w in batch.waiters if w not in lane.queue]
                        lane.queue[:0] = back
                else:
                    outcomes = batch.outcomes
                    self._answer(batch.waiters, outcomes or [exc] * len(batch.waiters))
                return
            except BaseException:  # interrupted again: finish first
                continue

    def _run(self, lane: _Lane[Request, Result], batch: _Batch[Request, Result]) -> None:
        index = self._lanes.index(lane)
        waiters = batch.waiters
        requests = [w.request for w in waiters]
        batch.started = True  # as late as can be: an interrupt before goes back to the queue
        try:
            outcomes: Sequence[Result | BaseException] = self._run_batch(index, requests)
            if len(outcomes) != len(waiters):
                raise InvariantViolation(
                    f"a batch of {len(waiters)} requests got {len(outcomes)} answers"
                )
        except BaseException as exc:  # the whole batch failed: each request's answer
            outcomes = [exc] * len(waiters)
        batch.outcomes = outcomes
        self._answer(waiters, outcomes)

    def _answer(
        self, waiters: list[_Waiter[Request, Result]], outcomes: Sequence[Result | BaseException]
    ) -> None:
        """Give each waiter its outcome and wake it. Safe to repeat (`_finish`): the same
        outcomes again, a wake-up too many."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter, outcome in zip(waiters, outcomes, strict=True):
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
