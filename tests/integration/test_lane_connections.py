"""PostgreSQL: a group-commit lane keeps its connection between batches, and hands it
back to the pool when its plans are due to be made again, when a batch fails, and when
the database is closed (storage/lane_connections.py, docs/adr/0015)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import event

import revenipe
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage import plan_refresh

from support import DEMO_CATALOG


@pytest.fixture
def backend(postgres_url: str) -> Iterator[revenipe.Backend]:
    with revenipe.open(postgres_url) as opened:
        yield opened


@pytest.fixture
def app(backend: revenipe.Backend) -> revenipe.App:
    created = backend.create_app("lanes", revenipe.load_catalog(DEMO_CATALOG))
    app = backend.app(created.app.id)
    app.grant_entitlement("alice", "monthly_credits", 1_000)
    return app


def _checkouts(backend: revenipe.Backend) -> list[int]:
    """Counts the pool's checkouts from now on (one element each)."""
    seen: list[int] = []
    event.listen(backend.database.engine, "checkout", lambda *_: seen.append(1))
    return seen


def _checked_out(backend: revenipe.Backend) -> int:
    return int(backend.database.engine.pool.checkedout())  # type: ignore[attr-defined]


def _charges_one(app: revenipe.App, key: str, remaining_before: int) -> revenipe.TrackResult:
    """A track of one of alice's credits under `key` succeeds, and charges exactly one."""
    result = app.track("alice", "monthly_credits", 1, idempotency_key=key)
    assert result.success
    assert result.remaining == remaining_before - 1
    return result


def _fails_keeping_nothing(
    backend: revenipe.Backend, code: ErrorCode, call: Callable[[], object]
) -> None:
    """`call` fails with `code`, and no lane keeps a connection after it."""
    with pytest.raises(RevenipeError) as raised:
        call()
    assert raised.value.code is code
    assert _checked_out(backend) == 0


def test_a_lane_keeps_its_connection_between_batches(
    backend: revenipe.Backend, app: revenipe.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 3600.0)  # never due here
    app.track("alice", "monthly_credits", 1)  # the lane checks its connection out
    checkouts = _checkouts(backend)
    for n in range(10):
        assert app.track("alice", "monthly_credits", 1, idempotency_key=f"k{n}").success
        assert _checked_out(backend) == 1  # kept, idle, between batches
    assert checkouts == []
    backend.database.hand_back_lane_connections()
    assert _checked_out(backend) == 0


def test_a_lane_checks_out_again_when_plans_are_due(
    backend: revenipe.Backend, app: revenipe.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.track("alice", "monthly_credits", 1)
    checkouts = _checkouts(backend)
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 0.0)
    for n in range(5):
        assert app.track("alice", "monthly_credits", 1, idempotency_key=f"k{n}").success
    assert len(checkouts) == 5
    assert _checked_out(backend) == 1


def test_a_failed_batch_hands_its_connection_back(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    first = app.track("alice", "monthly_credits", 1, idempotency_key="once")
    _fails_keeping_nothing(
        backend,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        lambda: app.track("alice", "monthly_credits", 2, idempotency_key="once"),
    )
    _charges_one(app, "after", first.remaining)
    assert app.track("alice", "monthly_credits", 1, idempotency_key="once").replayed


def test_a_kept_connection_the_server_dropped_fails_one_batch_then_is_replaced(
    backend: revenipe.Backend, app: revenipe.App, postgres_url: str
) -> None:
    """As a pooled connection did before (no pre-ping, docs/adr/0023): the batch on the
    dropped connection fails as `database_unavailable`, the next one runs on another."""
    before = app.track("alice", "monthly_credits", 1, idempotency_key="before")
    kept_pid = backend.database.write_grouped(  # on the lane of alice's tracks
        lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one(),
        key=(app.app_id, None, "alice"),
    )
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (kept_pid,))
    _fails_keeping_nothing(
        backend,
        ErrorCode.DATABASE_UNAVAILABLE,
        lambda: app.track("alice", "monthly_credits", 1, idempotency_key="dropped"),
    )
    assert not _charges_one(app, "dropped", before.remaining).replayed  # nothing written


def test_closing_hands_back_the_connection_a_batch_is_using(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    """A lane that ends its batch after the database was closed keeps nothing."""
    app.track("alice", "monthly_credits", 1)
    lanes = backend.database._lane_connections  # what `Database.close` closes first
    assert lanes is not None
    in_use: list[int] = []

    def job(_conn: object) -> int:
        lanes.close()
        in_use.append(_checked_out(backend))
        return 1

    assert backend.database.write_grouped(job) == 1
    assert in_use == [1]  # the batch's own
    assert _checked_out(backend) == 0


def _lanes_of_two_customers(backend: revenipe.Backend, app: revenipe.App) -> tuple[str, str]:
    """Two customers whose tracks run in different lanes (lanes are chosen by hash)."""
    committer = backend.database._committer()
    names = [f"lane-{n}" for n in range(64)]
    first = names[0]
    lane = committer._lane((app.app_id, None, first))
    other = next(n for n in names if committer._lane((app.app_id, None, n)) is not lane)
    return first, other


def _pool_idle(backend: revenipe.Backend, count: int) -> None:
    """Leave `count` connections idle in the pool (taken at once, given back)."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(backend.database.read()).exec_driver_sql("SELECT 1")
    assert backend.database.engine.pool.checkedin() >= count  # type: ignore[attr-defined]


@pytest.mark.parametrize("first", ["track", "read"])
def test_after_the_server_dropped_every_connection_only_the_first_transaction_fails(
    backend: revenipe.Backend, app: revenipe.App, postgres_url: str, first: str
) -> None:
    """A restart drops every connection: the lanes' kept ones and the pool's idle ones.
    The first transaction to meet a dead one fails (no pre-ping, docs/adr/0023), and
    every connection made before is thrown away with it (`Database._connection_lost`):
    the transactions after it, tracks in both lanes and reads, run on new connections
    at their first attempt. Nothing is charged twice."""
    one, two = _lanes_of_two_customers(backend, app)
    before = {}
    for name in (one, two):
        app.grant_entitlement(name, "monthly_credits", 10)
        before[name] = app.track(name, "monthly_credits", 1).remaining  # each lane keeps one
    assert _checked_out(backend) == 2
    _pool_idle(backend, 4)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    _fails_keeping_nothing(
        backend,
        ErrorCode.DATABASE_UNAVAILABLE,
        (lambda: app.track(one, "monthly_credits", 1, idempotency_key=one))
        if first == "track"
        else (lambda: app.state(one)),
    )
    for name in (two, one):
        result = app.track(name, "monthly_credits", 1, idempotency_key=name)
        assert result.success
        assert result.remaining == before[name] - 1  # the failed track charged nothing
        assert app.track(name, "monthly_credits", 1, idempotency_key=name).replayed
    for _ in range(6):  # more reads than there were idle connections
        assert app.state(one).entitlements


def test_a_lane_hands_its_connection_back_once_its_plans_are_due(
    backend: revenipe.Backend, app: revenipe.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due by when the connection last dropped its plans, not by when the lane took it:
    a connection checked out just before its refresh fell due is not kept for another
    whole interval."""
    monkeypatch.setattr(plan_refresh, "PLAN_REFRESH_S", 3600.0)
    app.track("alice", "monthly_credits", 1)
    (kept,) = backend.database._lane_connections._kept.values()  # type: ignore[union-attr]
    conn, _ = kept
    conn.connection.info[plan_refresh._REFRESHED_AT] -= 3600.0  # dropped an hour ago
    checkouts = _checkouts(backend)
    app.track("alice", "monthly_credits", 1)
    assert len(checkouts) == 1
