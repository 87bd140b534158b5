"""Usage alerts: which declared thresholds a balance is under, and what a change did.

A threshold is a remaining amount (`remaining: 0`) or a share of what was granted this
period (`remaining_percent: 20`). It is *crossed* while the balance is at or below it
(`remaining <= amount`, `remaining * 100 <= percent * granted`, in integers), and
*recovered* when the balance is above it again. The caller remembers which thresholds
are crossed; `transitions` compares that memory with the balance now, so every
threshold a change moved past is reported once (a jump across two reports both), and a
change that moved past none reports nothing, however often it is replayed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ThresholdKind(StrEnum):
    """How a threshold is measured."""

    REMAINING = "remaining"
    REMAINING_PERCENT = "remaining_percent"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One declared alert level of a usage key or metered entitlement."""

    kind: ThresholdKind
    value: int

    @property
    def key(self) -> str:
        """A stable name of the threshold: `remaining:0`, `remaining_percent:20`."""
        return f"{self.kind.value}:{self.value}"

    def is_crossed(self, remaining: int, granted: int) -> bool:
        """Whether a balance of `remaining`, out of `granted` this period, is at or
        below the threshold. A percentage of nothing granted is never crossed."""
        if self.kind is ThresholdKind.REMAINING:
            return remaining <= self.value
        if granted <= 0:
            return False
        return remaining * 100 <= self.value * granted

    def to_document(self) -> dict[str, int]:
        """The threshold as the catalog writes it."""
        return {self.kind.value: self.value}


@dataclass(frozen=True, slots=True)
class Transitions:
    """What a change did to a target's thresholds."""

    crossed: tuple[Threshold, ...] = ()
    recovered: tuple[Threshold, ...] = ()


def transitions(
    thresholds: Sequence[Threshold],
    crossed_before: Collection[str],
    remaining: int,
    granted: int,
) -> Transitions:
    """The thresholds newly crossed and newly recovered, given which were crossed before
    (by `Threshold.key`) and the balance now; in declared order."""
    crossed = []
    recovered = []
    for threshold in thresholds:
        now_crossed = threshold.is_crossed(remaining, granted)
        was_crossed = threshold.key in crossed_before
        if now_crossed and not was_crossed:
            crossed.append(threshold)
        elif was_crossed and not now_crossed:
            recovered.append(threshold)
    return Transitions(tuple(crossed), tuple(recovered))


def moves_any(thresholds: Sequence[Threshold], before: int, after: int, granted: int) -> bool:
    """Whether a balance going from `before` to `after` (out of the same `granted`)
    puts any threshold on the other side: if not, and the memory was right before, it
    is right after, and the change reports nothing."""
    return any(t.is_crossed(before, granted) != t.is_crossed(after, granted) for t in thresholds)
