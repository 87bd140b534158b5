"""Figures: throughput and latency percentiles of one measured run."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Measurement:
    """One scenario's figures. Latencies are per call, in milliseconds."""

    label: str
    callers: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int = 0
    refused: int = 0
    note: str | None = None
    machine_cpu_s: float | None = None
    """CPU time the whole machine spent while the callers ran (`machine_cpu_seconds`),
    when measured: the callers, the database server, and anything else."""

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "label": self.label,
            "callers": self.callers,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "errors": self.errors,
            "refused": self.refused,
        }
        if self.machine_cpu_s is not None and self.seconds > 0 and self.calls:
            result["machine_cpu_pct"] = round(100 * self.machine_cpu_s / self.seconds)
            result["machine_cpu_us_per_call"] = round(1e6 * self.machine_cpu_s / self.calls, 1)
        if self.note:
            result["note"] = self.note
        return result


def combine(measurements: Sequence[Measurement]) -> Measurement:
    """Rounds of one scenario as one, when only their percentiles are known (wrk): calls
    and seconds add up, p50 and the mean are call-weighted means of the rounds', p99 is
    the worst round's."""
    first = measurements[0]
    calls = sum(m.calls for m in measurements)

    def weighted(value: Callable[[Measurement], float]) -> float:
        return sum(value(m) * m.calls for m in measurements) / calls if calls else 0.0

    return Measurement(
        label=first.label,
        callers=first.callers,
        calls=calls,
        seconds=sum(m.seconds for m in measurements),
        p50_ms=weighted(lambda m: m.p50_ms),
        p99_ms=max(m.p99_ms for m in measurements),
        mean_ms=weighted(lambda m: m.mean_ms),
        errors=sum(m.errors for m in measurements),
        refused=sum(m.refused for m in measurements),
        note=first.note,
        machine_cpu_s=_sum_known([m.machine_cpu_s for m in measurements]),
    )


def _sum_known(values: Sequence[float | None]) -> float | None:
    """The sum, or None if any value is unknown."""
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None


def summarize(
    label: str,
    latencies_s: Sequence[float],
    seconds: float,
    *,
    callers: int,
    errors: int = 0,
    refused: int = 0,
    note: str | None = None,
    machine_cpu_s: float | None = None,
) -> Measurement:
    """A `Measurement` from per-call latencies (seconds) over a window of `seconds`."""
    ordered = sorted(latencies_s)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return Measurement(
        label=label,
        callers=callers,
        calls=len(ordered),
        seconds=seconds,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        mean_ms=mean * 1000,
        errors=errors,
        refused=refused,
        note=note,
        machine_cpu_s=machine_cpu_s,
    )


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent working so far, all cores together (Linux
    /proc/stat: user, nice, system, irq and softirq time; 0 elsewhere): in a run, the
    callers (an HTTP server and its load generator), the database and everything else."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
