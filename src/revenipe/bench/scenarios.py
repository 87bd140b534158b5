"""Measuring scenarios: N callers (worker processes, or threads of one worker process),
started together, and scenarios compared with each other measured in alternating rounds.

The machine is shared and noisy: what it does changes over seconds. Two scenarios
measured one after the other can see different machines; measured in alternating
rounds (A, B, A, B, ...) they see the same mix, so their ratio is trustworthy even when
the absolute figures are not.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from revenipe.bench.callers import CallerRun, CallerSpec, run_calls, run_thread_group
from revenipe.bench.pool import WorkerPool
from revenipe.bench.stats import Measurement, machine_cpu_seconds, summarize

START_DELAY_S = 0.05


@dataclass
class Runs:
    """Callers' runs, combined (over one or several rounds)."""

    latencies: list[float] = field(default_factory=list)
    window: float = 0.0
    """Seconds from each round's common start to its last caller's end, summed."""
    errors: int = 0
    refused: int = 0
    first_error: str | None = None
    machine_cpu_s: float | None = 0.0
    """CPU time of the whole machine while the callers ran, summed; None when it could
    not be read (not Linux)."""

    def add(self, other: Runs) -> None:
        self.latencies += other.latencies
        self.window += other.window
        self.errors += other.errors
        self.refused += other.refused
        self.first_error = self.first_error or other.first_error
        if self.machine_cpu_s is None or other.machine_cpu_s is None:
            self.machine_cpu_s = None
        else:
            self.machine_cpu_s += other.machine_cpu_s


def run_callers(
    pool: WorkerPool,
    spec: CallerSpec,
    key_sets: list[list[str]],
    *,
    duration: float | None = None,
    max_calls: int | None = None,
    warmup_calls: int = 0,
    warmup_keys: list[list[str]] | None = None,
    threads: bool = False,
) -> Runs:
    """Warm each caller up, then run them all from the same instant.

    Caller i calls round-robin over `key_sets[i]` (customers or balance rows) for
    `duration` seconds or `max_calls` calls. Callers are worker processes, or with
    `threads` threads of one worker process sharing one `Backend`. Warm-up caller i
    goes round `warmup_keys[i % len(warmup_keys)]`.
    """
    tag = secrets.token_hex(4)
    if warmup_calls:
        warm_sets = warmup_keys or key_sets
        warm = [warm_sets[i % len(warm_sets)] for i in range(len(key_sets))]
        _run(pool, spec, warm, f"warm-{tag}", 0.0, None, warmup_calls, threads)
    start_at = time.monotonic() + START_DELAY_S
    cpu_before = machine_cpu_seconds()
    runs = _run(pool, spec, key_sets, tag, start_at, duration, max_calls, threads)
    cpu = machine_cpu_seconds() - cpu_before
    return Runs(
        latencies=[latency for run in runs for latency in run.latencies],
        window=max(run.ended for run in runs) - min(run.started for run in runs),
        errors=sum(run.errors for run in runs),
        refused=sum(run.refused for run in runs),
        first_error=next((run.first_error for run in runs if run.first_error), None),
        machine_cpu_s=cpu if cpu > 0 else None,
    )


def _run(
    pool: WorkerPool,
    spec: CallerSpec,
    key_sets: list[list[str]],
    tag: str,
    start_at: float,
    duration: float | None,
    max_calls: int | None,
    threads: bool,
) -> list[CallerRun]:
    if threads:
        group = (run_thread_group, (spec, key_sets, tag, start_at, duration, max_calls))
        runs: list[CallerRun] = pool.run_each([group])
        return runs
    return pool.run_each(
        [
            (run_calls, (spec, keys, f"{tag}-{i}", start_at, duration, max_calls))
            for i, keys in enumerate(key_sets)
        ]
    )


@dataclass(frozen=True)
class Scenario:
    """Callers of one kind over their customers (or balance rows)."""

    label: str
    spec: CallerSpec
    key_sets: list[list[str]]
    """One list of keys per caller."""
    warmup_keys: list[list[str]] | None = None
    threads: bool = False
    """Callers are threads of one worker process (one shared `Backend`), not processes."""
    warmup_calls: int | None = None
    """Warm-up calls per caller, when not the plan's."""


def measure_interleaved(
    pool: WorkerPool,
    scenarios: list[Scenario],
    *,
    rounds: int,
    duration: float | None = None,
    max_calls: int | None = None,
    warmup_calls: int = 0,
) -> list[Measurement]:
    """Each scenario for `duration` seconds (or `max_calls` calls per caller) in all,
    split into `rounds` rounds that alternate between the scenarios."""
    rounds = max(1, rounds)
    totals = [Runs() for _ in scenarios]
    for number in range(rounds):
        for scenario, total in zip(scenarios, totals, strict=True):
            total.add(
                run_callers(
                    pool,
                    scenario.spec,
                    scenario.key_sets,
                    duration=duration / rounds if duration is not None else None,
                    max_calls=max(1, max_calls // rounds) if max_calls is not None else None,
                    warmup_calls=_warmup_calls(scenario, warmup_calls) if number == 0 else 0,
                    warmup_keys=scenario.warmup_keys,
                    threads=scenario.threads,
                )
            )
    measurements = []
    for scenario, total in zip(scenarios, totals, strict=True):
        if not total.latencies:
            raise RuntimeError(f"{scenario.label}: no call succeeded ({total.first_error})")
        measurements.append(
            summarize(
                scenario.label,
                total.latencies,
                total.window,
                callers=len(scenario.key_sets),
                errors=total.errors,
                refused=total.refused,
                note=f"first error: {total.first_error}" if total.first_error else None,
                machine_cpu_s=total.machine_cpu_s,
            )
        )
    return measurements


def _warmup_calls(scenario: Scenario, default: int) -> int:
    return default if scenario.warmup_calls is None else scenario.warmup_calls


def split(keys: list[str], parts: int) -> list[list[str]]:
    """`parts` disjoint round-robin shares of `keys` (each caller its own customers)."""
    return [keys[i::parts] for i in range(parts)]
