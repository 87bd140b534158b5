"""A batch of tracks read and written together (storage.tracks, docs/adr/0015): on
PostgreSQL the batch locks and reads for all its tracks at once and sends their writes
together; every track must still get the answer it would have had alone, whatever its
neighbours are, and every statement in between must see what the tracks before it
wrote. SQLite runs the same calls one after another in its batch: the same answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, text

import revenipe
from revenipe import RevenipeError
from revenipe.services import customers as customer_service
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import track as track_service
from revenipe.storage import grants as grant_store
from revenipe.storage import tracks as track_store

from support import DEMO_CATALOG, Outcome, assert_verified, outcome, run_in_one_batch

Call = Callable[[], Any]


def _by_id(app: revenipe.App, customer_id: str, value: int, key: str | None = None) -> Call:
    """A track naming the customer by our id (as the client protocol does)."""
    return lambda: track_service.track(
        app.context,
        app.app_id,
        CustomerRef(customer_id=customer_id),
        "credits",
        value,
        idempotency_key=key,
    )


def _balance_read(app: revenipe.App, customer_id: str) -> Call:
    """A job of the batch that reads the customer's grants, as any other write may."""

    def job(conn: Connection) -> int:
        return sum(row.grant.balance for row in grant_store.list_active_grants(conn, customer_id))

    return lambda: app.context.db.write_grouped(job, key=(app.app_id, customer_id, None))


def _pack_for(app: revenipe.App, customer_id: str) -> Call:
    """A job of the batch that gives the customer a pack of 50 credits (not a track)."""

    def job(conn: Connection) -> int:
        catalog = app.catalog()
        customer_service.grant_product_in(
            conn,
            app.app_id,
            customer_id,
            catalog,
            catalog.products_by_id["pack_50"],
            app.context.now(),
            kind=customer_service.SourceKind.MANUAL,
        )
        return 50

    return lambda: app.context.db.write_grouped(job, key=(app.app_id, customer_id, None))


def _calls(app: revenipe.App) -> list[tuple[Call, bool]]:
    """Alice, Bob and Carol hold the free plan's 100 credits each; each call, and
    whether it names its customer by our id (none raises: a job that raises makes the
    batch run again job by job, test_group_commit_batches). A batch runs the calls naming customers
    by external id first, then those naming them by id (its lock order); in each, in
    the order handed in."""
    alice, bob, carol = (app.login(name) for name in ("alice", "bob", "carol"))
    app.track("carol", "credits", 40, idempotency_key="earlier")
    return [
        (lambda: app.track("alice", "credits", 30), False),
        (_by_id(app, alice, 80), True),  # after Alice's 30 and 70: a refusal
        (lambda: app.track("bob", "credits", 500), False),  # a refusal
        (_balance_read(app, alice), True),  # 0: sees the tracks before it
        (lambda: app.track("carol", "credits", 40, idempotency_key="earlier"), False),  # replay
        (_by_id(app, bob, 100), True),  # exactly what Bob holds
        (_pack_for(app, bob), True),
        (_by_id(app, bob, 50), True),  # what the pack gave
        (lambda: app.track("alice", "credits", 70), False),  # exactly what is left
        (_balance_read(app, carol), True),  # 0
        (lambda: app.track("dave", "credits", 5), False),  # no such customer yet: refused
        (lambda: app.track("carol", "credits", 60), False),
    ]


EXPECTED_KINDS = [*["answer"] * 3, "balance", *["answer"] * 2, "balance", *["answer"] * 2]
EXPECTED_KINDS += ["balance", "answer", "answer"]


def _written(backend: revenipe.Backend, app: revenipe.App) -> tuple[Any, ...]:
    """What the database holds after the calls: each customer's available credits and
    the number of usage events and ledger entries, as a track's answer promises them."""
    available: list[int | None] = []
    for name in ("alice", "bob", "carol", "dave"):
        try:
            available.append(app.check(name, "credits", 1).available)
        except RevenipeError:  # no such customer
            available.append(None)
    with backend.database.read() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT COUNT(*) FROM usage_events WHERE app_id = :app), "
                "(SELECT COUNT(*) FROM ledger_entries WHERE app_id = :app)"
            ),
            {"app": app.app_id},
        ).one()
    return (*available, *counts)


def _new_app(backend: revenipe.Backend, name: str) -> revenipe.App:
    return backend.app(backend.create_app(name, revenipe.load_catalog(DEMO_CATALOG)).app.id)


def _alone(
    backend: revenipe.Backend, calls_of: Callable[[revenipe.App], list[tuple[Call, bool]]]
) -> tuple[list[Outcome | None], tuple[Any, ...]]:
    """Each call alone, in the order a batch runs them; and what was written."""
    app = _new_app(backend, "alone")
    calls = calls_of(app)
    outcomes: list[Outcome | None] = [None] * len(calls)
    for by_id in (False, True):
        for index, (call, named_by_id) in enumerate(calls):
            if named_by_id == by_id:
                outcomes[index] = outcome(call)
    return outcomes, _written(backend, app)


def _in_one_batch(
    backend: revenipe.Backend,
    monkeypatch: pytest.MonkeyPatch,
    app: revenipe.App,
    calls_of: Callable[[revenipe.App], list[tuple[Call, bool]]],
) -> tuple[list[Outcome | None], list[int]]:
    """The calls run in one batch (customers set up outside it)."""
    calls = [call for call, _ in calls_of(app)]
    return run_in_one_batch(
        monkeypatch, backend.database, [lambda call=call: outcome(call) for call in calls]
    )


def test_tracks_of_one_batch_answer_as_if_each_ran_alone(
    backend: revenipe.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, written = _alone(backend, _calls)
    assert [outcome[0] for outcome in expected if outcome] == EXPECTED_KINDS
    assert expected[1] == ("answer", (False, 0, 0, "insufficient_balance"))
    assert expected[3] == ("balance", 0)
    assert expected[5] == ("answer", (True, 100, 0, None))
    assert expected[7] == ("answer", (True, 50, 0, None))
    assert expected[9] == ("balance", 0)
    app = _new_app(backend, "batched")
    outcomes, batches = _in_one_batch(backend, monkeypatch, app, _calls)
    assert batches == [1, len(expected)], "the calls were not decided in one transaction"
    assert outcomes == expected
    assert _written(backend, app) == written
    assert_verified(backend, app.app_id)


def _one_customer_two_ways(app: revenipe.App) -> list[tuple[Call, bool]]:
    """Alice by external id and by our id, nothing else: both read ahead by the batch."""
    alice = app.login("alice")
    return [(lambda: app.track("alice", "credits", 60), False), (_by_id(app, alice, 60), True)]


def test_one_customer_named_two_ways_in_one_batch_is_never_overspent(
    backend: revenipe.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, written = _alone(backend, _one_customer_two_ways)
    assert expected == [
        ("answer", (True, 60, 40, None)),
        ("answer", (False, 0, 40, "insufficient_balance")),
    ]
    app = _new_app(backend, "batched")
    outcomes, batches = _in_one_batch(backend, monkeypatch, app, _one_customer_two_ways)
    assert batches == [1, 2]
    assert outcomes == expected
    assert _written(backend, app) == written
    assert_verified(backend, app.app_id)


def _one_hot_customer(app: revenipe.App) -> list[tuple[Call, bool]]:
    """Alice's tracks only: across her grants (100 free credits, then a pack of 50), a
    replay of a key used earlier in the same batch, a reused key, a refusal, and reads
    of her grants after them."""
    alice = app.login("alice")
    app.grant_product("alice", "pack_50")
    return [
        (lambda: app.track("alice", "credits", 60, idempotency_key="a"), False),
        (lambda: app.track("alice", "credits", 30), False),
        (lambda: app.track("alice", "credits", 60, idempotency_key="a"), False),  # replay
        (lambda: app.track("alice", "credits", 50), False),  # 60 left: crosses into the pack
        (lambda: app.track("alice", "credits", 11), False),  # 10 left: a refusal
        (lambda: app.track("alice", "credits", 10, idempotency_key="b"), False),
        (_by_id(app, alice, 1), True),  # nothing left
        (_balance_read(app, alice), True),
    ]


def test_one_customers_tracks_in_one_batch_decide_on_each_others_writes(
    backend: revenipe.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, written = _alone(backend, _one_hot_customer)
    assert expected[3] == ("answer", (True, 50, 10, None))
    assert expected[4] == ("answer", (False, 0, 10, "insufficient_balance"))
    assert expected[7] == ("balance", 0)
    app = _new_app(backend, "batched")
    reruns: list[int] = []
    rerun = backend.database._run_each_behind_a_savepoint
    monkeypatch.setattr(
        backend.database,
        "_run_each_behind_a_savepoint",
        lambda batch, order: reruns.append(len(batch)) or rerun(batch, order),
    )
    outcomes, batches = _in_one_batch(backend, monkeypatch, app, _one_hot_customer)
    assert batches == [1, 8]
    assert reruns == [], "the batch failed and ran again job by job"
    assert outcomes == expected
    assert _written(backend, app) == written
    assert_verified(backend, app.app_id)


def _distinct_customers(app: revenipe.App) -> list[tuple[Call, bool]]:
    """Tracks of three customers that neither empty nor are refused (which would look
    for webhook endpoints, a statement): the batch sends their writes together."""
    for name in ("alice", "bob", "carol"):
        app.login(name)
    return [
        (lambda: app.track("alice", "credits", 10), False),
        (lambda: app.track("bob", "credits", 20), False),
        (lambda: app.track("carol", "credits", 30, idempotency_key="c"), False),
    ]


def _sends(
    monkeypatch: pytest.MonkeyPatch, fail_first: bool, drivers: list[Any] | None = None
) -> list[int]:
    """The sizes of the kept writes' sends, the first failing if `fail_first`; the
    driver connections they went on appended to `drivers`."""
    sent: list[int] = []
    insert = track_store.insert_track_records

    def spy(conn: Connection, records: Sequence[Any], **options: Any) -> None:
        if drivers is not None:
            drivers.append(conn.connection.dbapi_connection)
        sent.append(len(records))
        if fail_first and len(sent) == 1:
            raise RuntimeError("the database refused the batch's writes")
        insert(conn, records, **options)

    monkeypatch.setattr(track_store, "insert_track_records", spy)
    return sent


@pytest.mark.parametrize("fail_first", [False, True], ids=["sent", "send-fails"])
def test_the_writes_of_a_batch_are_sent_together_before_it_commits(
    backend: revenipe.Backend, monkeypatch: pytest.MonkeyPatch, fail_first: bool
) -> None:
    """The kept writes go together before the commit. If their statement fails (a
    database error), the batch is rolled back and runs again, each job behind a
    savepoint, writing nothing twice."""
    expected, written = _alone(backend, _distinct_customers)
    drivers: list[Any] = []
    sent = _sends(monkeypatch, fail_first=fail_first, drivers=drivers)
    app = _new_app(backend, "batched")
    outcomes, _ = _in_one_batch(backend, monkeypatch, app, _distinct_customers)
    assert outcomes == expected
    assert _written(backend, app) == written
    assert_verified(backend, app.app_id)
    if not backend.database.is_sqlite:
        # The batch began and committed its transaction itself, in autocommit mode
        # (driver_sql.own_transaction): its connection went back to the pool as it
        # came, idle and out of autocommit mode, committed or rolled back.
        for driver in drivers:
            assert driver.autocommit is False
            assert driver.info.transaction_status.name == "IDLE"
    # SQLite writes each track as it goes; on PostgreSQL the three go together. After a
    # failure (the first write on SQLite, the three on PostgreSQL), each job on its own.
    if backend.database.is_sqlite:
        assert sent == ([1, 1, 1, 1] if fail_first else [1, 1, 1])
    else:
        assert sent == ([3, 1, 1, 1] if fail_first else [3])


def test_a_batch_reads_ahead_only_its_own_apps_customers(postgres_url: str) -> None:
    """PostgreSQL's read-ahead (`map_track_locks`) resolves every request to a customer of
    the request's app, named by id or by external id: another app's customer, named either
    way, is not locked and its grants are not read, as `lock_for_track` alone finds no
    such customer."""
    with revenipe.open(postgres_url) as backend:
        ours, theirs = _new_app(backend, "ours"), _new_app(backend, "theirs")
        alice = ours.login("alice")
        mallory = theirs.login("mallory")  # exists only in the other app
        theirs_alice = theirs.login("alice")  # the same external id, the other app's

        def request(customer_id: str | None, external_id: str | None) -> Any:
            query = track_store.CandidateQuery.of(
                ours.app_id,
                customer_id=customer_id,
                external_id=external_id,
                entitlement_ids=("monthly_credits", "bonus_credits", "purchased_credits"),
                source_id=None,
            )
            return track_store.TrackLockRequest(
                ours.app_id, customer_id, external_id, "key", candidates=query
            )

        requests = [
            request(mallory, None),
            request(None, "mallory"),
            request(theirs_alice, None),
            request(None, "alice"),
            request(alice, None),
        ]
        with backend.database.write() as conn:
            locks, grants = track_store.map_track_locks(conn, requests)
            alone = [track_store.lock_for_track(conn, r) for r in requests]
        found = [lock.customer_id if lock is not None else None for lock in locks.values()]
        assert found == [None, None, None, alice, alice]
        assert [lock.customer_id if lock is not None else None for lock in alone] == found
        assert set(grants) == {alice}
        assert grants[alice], "alice's free plan grant was not read"
        assert {row.grant.id for row in grants[alice]} == {
            row.grant.id for row in alone[4].candidates or []
        }


def test_a_batch_lock_keeps_its_plan_and_leaves_the_plan_mode_as_it_was(
    postgres_url: str,
) -> None:
    """PostgreSQL planned the batch's lock over arrays again on every batch (its generic
    plan looks dearer than one made for a few requests): `map_track_locks` runs it with a
    kept (generic) plan, and the session's `plan_cache_mode` is as before afterwards."""
    with revenipe.open(postgres_url) as backend:
        app = _new_app(backend, "plans")
        customers = [app.login(name) for name in ("alice", "bob", "carol")]
        requests = [
            track_store.TrackLockRequest(app.app_id, customer, None, f"key-{i}")
            for i, customer in enumerate(customers)
        ]
        with backend.database.write() as conn:
            before = conn.execute(text("SHOW plan_cache_mode")).scalar_one()
            for _ in range(8):
                locks, _grants = track_store.map_track_locks(conn, requests)
                assert [lock.customer_id for lock in locks.values() if lock] == customers
            assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == before
            plans = conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%WITH requested AS MATERIALIZED%'"
                )
            ).all()
        assert [tuple(row) for row in plans] == [(8, 0)]
