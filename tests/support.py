"""Helpers shared by the tests (importable as `support`: tests/ is on the path)."""

from __future__ import annotations

import calendar
import os
import shutil
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import pytest

import revenipe
from revenipe.storage import database as database_module

T = TypeVar("T")


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 31, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


DEMO_CATALOG = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metered
  - id: bonus_credits
    name: Bonus credits
    type: metered
  - id: purchased_credits
    name: Purchased credits
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, bonus_credits, purchased_credits]
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - entitlement: monthly_credits
        amount: 100
        reset: period
        rollover: {max: 0}
      - entitlement: export_hd
  - id: pro
    name: Pro
    type: subscription
    recurring_interval: month
    price: 1000
    grants:
      - entitlement: monthly_credits
        amount: 1000
        reset: period
        rollover: {max: 500}
  - id: pack_50
    name: 50 credits
    type: one_time
    price: 500
    grants:
      - entitlement: purchased_credits
        amount: 50
        expires_after: P30D
  - id: welcome
    name: Welcome bonus
    type: one_time
    grants:
      - entitlement: bonus_credits
        amount: 10
"""


def assert_verified(backend: revenipe.Backend, app_id: str | None = None) -> None:
    report = backend.verify(app_id)
    assert report.ok, "\n".join(report.problems)


Outcome = tuple[str, Any]


def outcome(call: Callable[[], Any]) -> Outcome:
    """What a call came to, comparable between runs: a track's answer, a balance (an
    int), a revenipe error's code, or any other exception's type."""
    try:
        result = call()
    except revenipe.RevenipeError as exc:
        return ("error", exc.code)
    except Exception as exc:
        return ("failure", type(exc).__name__)
    if isinstance(result, int):
        return ("balance", result)
    return ("answer", (result.success, result.consumed, result.remaining, result.error))


def run_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
    database: Any,
    calls: Sequence[Callable[[], T]],
    hold_key: Hashable = (),
) -> tuple[list[T | None], list[int]]:
    """Run `calls` in one group-commit batch (docs/adr/0015), in this order: a job
    holds the only write lane while the calls are handed in one after another, then
    lets go. Returns what each call returned and the size of every batch run."""
    monkeypatch.setattr(database_module, "POSTGRES_WRITE_LANES", 1)
    monkeypatch.setattr(database, "postgres_write_lanes", None)
    batches: list[int] = []
    run_jobs = database._run_jobs

    def spy(lane: int, batch: Sequence[Any]) -> list[Any]:
        batches.append(len(batch))
        return run_jobs(lane, batch)

    monkeypatch.setattr(database, "_run_jobs", spy)
    # A fresh committer: one lane, running its batches through the spy.
    monkeypatch.setattr(database, "_group", database._new_committer())
    gate = threading.Event()
    holder = threading.Thread(
        target=database.write_grouped, args=(lambda conn: gate.wait(10),), kwargs={"key": hold_key}
    )
    holder.start()
    while not batches:
        time.sleep(0.001)
    results: list[T | None] = [None] * len(calls)
    threads = []
    for index, call in enumerate(calls):

        def run(index: int = index, call: Callable[[], T] = call) -> None:
            results[index] = call()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        _wait_queued(database, index + 1)
    gate.set()
    for thread in [holder, *threads]:
        thread.join(30)
    return results, batches


def _wait_queued(database: Any, count: int) -> None:
    deadline = time.monotonic() + 10
    while sum(len(lane.queue) for lane in database._group._lanes) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} calls never queued")
        time.sleep(0.001)


# --- the property tests' own time arithmetic (independent of the engine's) ---------


def months_later(moment: datetime, months: int) -> datetime:
    """`moment` plus whole calendar months, the day clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def boundary(anchor: datetime, unit: str, index: int) -> datetime:
    """Start of period `index`, always counted from the anchor."""
    if unit == "day":
        return anchor + timedelta(days=index)
    if unit == "week":
        return anchor + timedelta(days=7 * index)
    if unit == "year":
        return months_later(anchor, 12 * index)
    assert unit == "month"
    return months_later(anchor, index)


def unavailable(message: str) -> NoReturn:
    """Something the suite needs is missing: the test fails under CI (a missing install
    step must not pass as green) and is skipped locally, with `message`."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def installed(program: str, *, also_in: str | None = None) -> str:
    """The path of a program `scripts/setup --tests` installs (looked for on PATH, then
    in `also_in`), or `unavailable`."""
    path = shutil.which(program) or (shutil.which(program, path=also_in) if also_in else None)
    if path is None:
        unavailable(f"{program} is not installed: run scripts/setup --tests")
    return path
