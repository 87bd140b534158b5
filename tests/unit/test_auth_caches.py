"""The authentication caches' refresh (server/security.py `_Recent`): one caller reads
again when a value is due; the event loop's other callers keep the old value meanwhile,
never longer than twice the time-to-live."""

from __future__ import annotations

import pytest

from revenipe.server import security
from revenipe.server.security import NotCached, _Recent


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(security.time, "monotonic", fake)
    return fake


def _keep(value: str | None) -> bool:
    return value is not None


def test_one_caller_reads_again_the_others_keep_the_old_value(clock: _Clock) -> None:
    recent: _Recent[str | None] = _Recent(2.0)
    reads: list[str] = []

    def load(value: str) -> str:
        reads.append(value)
        return value

    assert recent.get("k", lambda: load("app_1"), cached_only=False, keep=_keep) == "app_1"
    clock.now += 1.0
    assert recent.get("k", lambda: load("never"), cached_only=True, keep=_keep) == "app_1"
    clock.now += 1.5  # due
    with pytest.raises(NotCached):  # this caller reads it, off the loop
        recent.get("k", lambda: load("never"), cached_only=True, keep=_keep)
    # Meanwhile the others are answered from the old value, without reading.
    for _ in range(3):
        assert recent.get("k", lambda: load("never"), cached_only=True, keep=_keep) == "app_1"
    assert recent.get("k", lambda: load("app_2"), cached_only=False, keep=_keep) == "app_2"
    assert recent.get("k", lambda: load("never"), cached_only=True, keep=_keep) == "app_2"
    assert reads == ["app_1", "app_2"]


def test_the_old_value_is_never_served_past_twice_the_ttl(clock: _Clock) -> None:
    recent: _Recent[str | None] = _Recent(2.0)
    recent.get("k", lambda: "app_1", cached_only=False, keep=_keep)
    clock.now += 2.5
    with pytest.raises(NotCached):
        recent.get("k", lambda: "x", cached_only=True, keep=_keep)
    # The reader never came back (its request failed): at 2 x ttl nobody gets the old
    # value; the next caller reads.
    clock.now += 1.6
    with pytest.raises(NotCached):
        recent.get("k", lambda: "x", cached_only=True, keep=_keep)


def test_a_failed_read_lets_the_next_caller_read(clock: _Clock) -> None:
    recent: _Recent[str | None] = _Recent(2.0)
    recent.get("k", lambda: "app_1", cached_only=False, keep=_keep)
    clock.now += 2.5
    with pytest.raises(NotCached):
        recent.get("k", lambda: "x", cached_only=True, keep=_keep)

    def broken() -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        recent.get("k", broken, cached_only=False, keep=_keep)
    with pytest.raises(NotCached):  # nobody is reading now: this one must
        recent.get("k", lambda: "x", cached_only=True, keep=_keep)


def test_values_not_kept_are_read_every_time(clock: _Clock) -> None:
    recent: _Recent[str | None] = _Recent(2.0)
    assert recent.get("unknown", lambda: None, cached_only=False, keep=_keep) is None
    with pytest.raises(NotCached):
        recent.get("unknown", lambda: None, cached_only=True, keep=_keep)
    recent.forget_all()
