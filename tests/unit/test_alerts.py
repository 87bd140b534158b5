"""Usage alert thresholds (engine.alerts): crossings reported once each, whatever the
path the balance takes."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from revenipe.engine.alerts import Threshold, ThresholdKind, transitions

PERCENT_20 = Threshold(ThresholdKind.REMAINING_PERCENT, 20)
EMPTY = Threshold(ThresholdKind.REMAINING, 0)

thresholds = st.lists(
    st.one_of(
        st.builds(Threshold, st.just(ThresholdKind.REMAINING), st.integers(0, 1000)),
        st.builds(Threshold, st.just(ThresholdKind.REMAINING_PERCENT), st.integers(0, 100)),
    ),
    unique=True,
    max_size=6,
)


def test_percent_is_of_what_was_granted_in_integers() -> None:
    assert PERCENT_20.is_crossed(20, 100)
    assert not PERCENT_20.is_crossed(21, 100)
    assert PERCENT_20.is_crossed(1, 7)  # 1/7 = 14%
    assert not PERCENT_20.is_crossed(2, 7)  # 28%
    assert not PERCENT_20.is_crossed(0, 0)  # nothing granted: no share of it
    assert EMPTY.is_crossed(0, 0)


def test_a_jump_across_two_reports_both_in_declared_order() -> None:
    changed = transitions((PERCENT_20, EMPTY), set(), 0, 100)
    assert changed.crossed == (PERCENT_20, EMPTY)
    assert changed.recovered == ()
    again = transitions((PERCENT_20, EMPTY), {PERCENT_20.key, EMPTY.key}, 100, 100)
    assert again.recovered == (PERCENT_20, EMPTY)


@given(thresholds, st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000)), max_size=30))
def test_crossings_and_recoveries_alternate_and_memory_matches_the_balance(
    declared: list[Threshold], path: list[tuple[int, int]]
) -> None:
    crossed: set[str] = set()
    history: dict[str, list[str]] = {t.key: [] for t in declared}
    for remaining, granted in path:
        changed = transitions(declared, crossed, remaining, granted)
        for t in changed.crossed:
            assert t.key not in crossed
            crossed.add(t.key)
            history[t.key].append("crossed")
        for t in changed.recovered:
            assert t.key in crossed
            crossed.discard(t.key)
            history[t.key].append("recovered")
        # The memory is exactly the thresholds the balance is at or below now.
        assert crossed == {t.key for t in declared if t.is_crossed(remaining, granted)}
        # The same balance again reports nothing (a replay, a no-op change).
        assert transitions(declared, crossed, remaining, granted).crossed == ()
        assert transitions(declared, crossed, remaining, granted).recovered == ()
    for events in history.values():
        assert all(a != b for a, b in itertools.pairwise(events))
        assert not events or events[0] == "crossed"
