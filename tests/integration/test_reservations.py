"""Reservations on real storage (SQLite and PostgreSQL), through the embedded API:
hold, settle, release, expiry on the timeline, replays, refusals and bad input
(docs/concepts/reservations.md)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

import revenipe
from revenipe import ErrorCode, RefusalCode, RevenipeError
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import reservations as reservation_service

from support import Clock, assert_verified


def credits(app: revenipe.App, customer: str) -> int:
    return next(k.remaining for k in app.state(customer).usage_keys if k.key_id == "credits")


def entry_kinds(backend: revenipe.Backend, app: revenipe.App) -> list[tuple[str, int]]:
    from revenipe.storage import ledger as ledger_store

    with backend.database.read() as conn:
        return [(e.kind, e.amount) for e in ledger_store.iter_entries(conn, app.app_id)]


def test_a_hold_is_out_of_remaining_and_settling_less_gives_the_rest_back(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    app.grant_product("alice", "pack_50")  # 100 monthly + 50 purchased
    held = app.reserve("alice", "credits", 120)
    assert held.success and held.held == 120 and held.remaining == 30 and held.error is None
    assert held.reservation_id is not None and held.expires_at is not None
    assert credits(app, "alice") == 30
    # A track sees only what is not held.
    assert not app.track("alice", "credits", 31).success
    settled = app.settle(held.reservation_id, 70)
    assert (settled.success, settled.consumed, settled.released, settled.shortfall) == (
        True,
        70,
        50,
        0,
    )
    assert settled.remaining == 80 == credits(app, "alice")
    assert settled.usage_event_id is not None
    # The draws are those of a track of 70: monthly first.
    state = {e.entitlement_id: e.remaining for e in app.state("alice").entitlements}
    assert state["monthly_credits"] == 30 and state["purchased_credits"] == 50
    assert app.reservation(held.reservation_id).state == "settled"
    assert_verified(backend, app.app_id)


def test_settling_more_than_held_draws_the_difference_or_reports_the_shortfall(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    first = app.reserve("alice", "credits", 40)
    assert first.reservation_id is not None
    more = app.settle(first.reservation_id, 60)
    assert (more.consumed, more.released, more.shortfall, more.remaining) == (60, 0, 0, 40)
    second = app.reserve("alice", "credits", 30)
    assert second.reservation_id is not None
    short = app.settle(second.reservation_id, 50)  # 10 left beyond the hold: not enough
    assert (short.success, short.consumed, short.released, short.shortfall) == (True, 30, 0, 20)
    assert short.remaining == 10 == credits(app, "alice")
    assert_verified(backend, app.app_id)


def test_settling_zero_is_a_release_and_a_release_gives_everything_back(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    held = app.reserve("alice", "monthly_credits", 100)
    assert held.reservation_id is not None and credits(app, "alice") == 0
    zero = app.settle(held.reservation_id, 0)
    assert (zero.consumed, zero.released, zero.remaining, zero.usage_event_id) == (
        0,
        100,
        100,
        None,
    )
    assert app.reservation(held.reservation_id).state == "released"
    again = app.reserve("alice", "monthly_credits", 100)
    assert again.reservation_id is not None
    released = app.release(again.reservation_id)
    assert (released.consumed, released.released, released.remaining) == (0, 100, 100)
    assert credits(app, "alice") == 100
    assert_verified(backend, app.app_id)


def test_a_hold_that_cannot_be_paid_is_refused_and_holds_nothing(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    refused = app.reserve("alice", "credits", 101)
    assert not refused.success and refused.error == RefusalCode.INSUFFICIENT_BALANCE
    assert refused.reservation_id is None and refused.held == 0 and refused.remaining == 100
    assert app.reserve("alice", "export_hd", 1).error == RefusalCode.NOT_METERED
    assert app.reserve("alice", "nope", 1).error == RefusalCode.UNKNOWN_ENTITLEMENT
    assert app.reserve("alice", "purchased_credits", 1).error == RefusalCode.NO_ACCESS
    assert (
        app.reserve("alice", "credits", 1, access_source_id="src_x").error
        == RefusalCode.UNKNOWN_ACCESS_SOURCE
    )
    assert credits(app, "alice") == 100
    assert [kind for kind, _ in entry_kinds(backend, app)] == ["granted"]
    assert_verified(backend, app.app_id)


BAD_VALUES: list[Any] = [0, -1, 1.0, 1.5, "5", True, None, 2**53, [1], {"v": 1}]
BAD_TTLS: list[Any] = [0, -5, 86_401, 10**12, 1.5, "60", True, [60]]


def test_bad_input_is_an_error_that_changes_nothing(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    app.login("alice")
    before = entry_kinds(backend, app)
    for value in BAD_VALUES:
        with pytest.raises(RevenipeError) as raised:
            app.reserve("alice", "credits", value)
        assert raised.value.code is ErrorCode.INVALID_VALUE, value
    for ttl in BAD_TTLS:
        with pytest.raises(RevenipeError) as raised:
            app.reserve("alice", "credits", 5, ttl_seconds=ttl)
        assert raised.value.code is ErrorCode.INVALID_ARGUMENT, ttl
    for bad_id in ["", "UPPER", "a" * 65, 5, None]:
        with pytest.raises(RevenipeError):
            app.reserve("alice", bad_id, 5)  # type: ignore[arg-type]
    held = app.reserve("alice", "credits", 10, ttl_seconds=86_400)
    assert held.reservation_id is not None
    for value in [-1, 1.0, "5", True, None, 2**53]:
        with pytest.raises(RevenipeError) as raised:
            app.settle(held.reservation_id, value)
        assert raised.value.code is ErrorCode.INVALID_VALUE, value
    for unknown in ["res_nope", "", "x" * 65, 5, None]:
        for call in (app.release, app.reservation, lambda r: app.settle(r, 1)):
            with pytest.raises(RevenipeError):
                call(unknown)
    with pytest.raises(RevenipeError) as raised:
        app.release("res_0000000000000000000000000")
    assert raised.value.code is ErrorCode.RESERVATION_NOT_FOUND
    assert entry_kinds(backend, app) == [*before, ("held", -10)]
    assert app.reservation(held.reservation_id).state == "held"
    assert_verified(backend, app.app_id)


def test_a_hold_honours_its_idempotency_key(backend: revenipe.Backend, app: revenipe.App) -> None:
    first = app.reserve("alice", "credits", 30, idempotency_key="job-1")
    again = app.reserve("alice", "credits", 30, idempotency_key="job-1")
    assert again.replayed and not first.replayed
    assert (again.reservation_id, again.held, again.remaining, again.expires_at) == (
        first.reservation_id,
        30,
        70,
        first.expires_at,
    )
    assert credits(app, "alice") == 70
    for other in [
        {"value": 31},
        {"id": "monthly_credits"},
        {"ttl_seconds": 60},
    ]:
        args: dict[str, Any] = {"id": "credits", "value": 30, **other}
        with pytest.raises(RevenipeError) as raised:
            app.reserve("alice", args.pop("id"), args.pop("value"), idempotency_key="job-1", **args)
        assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    # A refused hold records nothing: the key may hold later.
    assert not app.reserve("alice", "credits", 500, idempotency_key="job-2").success
    assert app.reserve("alice", "credits", 5, idempotency_key="job-2").success
    assert_verified(backend, app.app_id)


def test_the_first_close_wins_and_is_replayed(backend: revenipe.Backend, app: revenipe.App) -> None:
    held = app.reserve("alice", "credits", 50)
    assert held.reservation_id is not None
    settled = app.settle(held.reservation_id, 20)
    replay = app.settle(held.reservation_id, 45)
    assert replay.replayed and (replay.consumed, replay.released, replay.remaining) == (20, 30, 80)
    assert replay.usage_event_id == settled.usage_event_id
    closed = app.release(held.reservation_id)
    assert not closed.success and closed.error == RefusalCode.RESERVATION_CLOSED
    assert (closed.consumed, closed.released) == (0, 0) and closed.remaining == 80
    other = app.reserve("alice", "credits", 10)
    assert other.reservation_id is not None
    app.release(other.reservation_id)
    assert app.release(other.reservation_id).replayed
    assert app.settle(other.reservation_id, 0).replayed
    refused = app.settle(other.reservation_id, 5)
    assert not refused.success and refused.error == RefusalCode.RESERVATION_CLOSED
    assert credits(app, "alice") == 80
    assert_verified(backend, app.app_id)


def test_an_expired_hold_is_given_back_without_anything_touching_it(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    held = app.reserve("alice", "credits", 75, ttl_seconds=60)
    assert held.reservation_id is not None and credits(app, "alice") == 25
    clock.advance(seconds=59)
    assert credits(app, "alice") == 25
    clock.advance(seconds=1)
    # A read of the customer's state, nothing about the reservation: all given back.
    assert credits(app, "alice") == 100
    expired = app.reservation(held.reservation_id)
    assert expired.state == "expired" and expired.released == 75 and expired.consumed == 0
    assert expired.closed_at == held.expires_at
    refused = app.settle(held.reservation_id, 10)
    assert not refused.success and refused.error == RefusalCode.RESERVATION_CLOSED
    assert app.release(held.reservation_id).replayed
    assert credits(app, "alice") == 100
    assert_verified(backend, app.app_id)


def test_an_expired_hold_is_given_back_before_a_track_decides(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    app.reserve("alice", "credits", 100, ttl_seconds=1)
    clock.advance(seconds=2)
    assert app.track("alice", "credits", 100).success
    assert_verified(backend, app.app_id)


def test_an_expired_hold_reads_expired_by_its_id_alone(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    held = app.reserve("alice", "credits", 10, ttl_seconds=5)
    assert held.reservation_id is not None
    clock.advance(seconds=5)
    assert app.reservation(held.reservation_id).state == "expired"
    assert credits(app, "alice") == 100
    assert_verified(backend, app.app_id)


def test_a_grant_that_resets_while_held_gets_nothing_extra(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    """Held units belong to their period: released after the monthly reset, the rest is
    written off, so holding across a reset never doubles a month's credits."""
    app.login("alice")  # 2026-01-31 12:00: 100 monthly credits, reset on the 28th at 12:00
    clock.advance(days=27, hours=12)
    held = app.reserve("alice", "monthly_credits", 90, ttl_seconds=86_400)
    assert held.reservation_id is not None
    clock.advance(hours=13)  # past the reset, not the hold's expiry
    fresh = credits(app, "alice")
    assert fresh == 100
    settled = app.settle(held.reservation_id, 30)
    assert (settled.consumed, settled.released, settled.remaining) == (30, 60, 100)
    assert credits(app, "alice") == 100
    assert_verified(backend, app.app_id)


def test_a_grant_that_expires_while_held_loses_only_what_expiry_would_take(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    app.grant_entitlement(
        "alice", "purchased_credits", 40, expires_at=clock.now + timedelta(hours=1)
    )
    held = app.reserve("alice", "purchased_credits", 40, ttl_seconds=86_400)
    assert held.reservation_id is not None
    clock.advance(hours=2)
    settled = app.settle(held.reservation_id, 25)
    assert (settled.consumed, settled.released, settled.remaining) == (25, 15, 0)
    assert_verified(backend, app.app_id)


def test_another_app_or_customer_never_sees_a_reservation(
    backend: revenipe.Backend, app: revenipe.App, demo_catalog: revenipe.Catalog
) -> None:
    held = app.reserve("alice", "credits", 10)
    assert held.reservation_id is not None
    other = backend.app(backend.create_app("other", demo_catalog).app.id)
    for call in (other.reservation, other.release, lambda r: other.settle(r, 1)):
        with pytest.raises(RevenipeError) as raised:
            call(held.reservation_id)
        assert raised.value.code is ErrorCode.RESERVATION_NOT_FOUND
    app.login("bob")
    ctx: ServiceContext = app.context
    for owner in (CustomerRef.external("bob"), CustomerRef.external("nobody")):
        with pytest.raises(RevenipeError) as raised:
            reservation_service.settle_reservation(
                ctx, app.app_id, held.reservation_id, 1, owner=owner
            )
        assert raised.value.code is ErrorCode.RESERVATION_NOT_FOUND
    mine = reservation_service.get_reservation(
        ctx, app.app_id, held.reservation_id, owner=CustomerRef.external("alice")
    )
    assert mine.state == "held" and credits(app, "alice") == 90
    assert_verified(backend, app.app_id)


def test_concurrent_holds_never_overspend(backend: revenipe.Backend, app: revenipe.App) -> None:
    """20 threads hold 75 each against 500 at once: exactly 6 succeed; settling each
    at 50 leaves 200."""
    app.grant_entitlement("alice", "purchased_credits", 500)
    barrier = threading.Barrier(20)
    results: list[revenipe.HoldResult] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        result = app.reserve("alice", "purchased_credits", 75)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [r for r in results if r.success]
    assert len(won) == 6
    assert all(r.error == RefusalCode.INSUFFICIENT_BALANCE for r in results if not r.success)
    assert sorted(r.remaining for r in won) == [50, 125, 200, 275, 350, 425]
    for result in won:
        assert result.reservation_id is not None
        assert app.settle(result.reservation_id, 50).consumed == 50
    balance = {e.entitlement_id: e.remaining for e in app.state("alice").entitlements}
    assert balance["purchased_credits"] == 200
    assert_verified(backend, app.app_id)


def test_concurrent_holds_settles_releases_and_tracks_conserve_every_unit(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    """8 threads mix holds, settles (less, more, 0), releases and tracks on one balance:
    what is left is exactly what was granted minus what the answers say was consumed,
    never below zero, and the ledger verifies."""
    import random

    app.grant_entitlement("mixer", "purchased_credits", 1_000)
    consumed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def run(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(25):
            roll = rng.random()
            if roll < 0.2:
                tracked = app.track("mixer", "purchased_credits", rng.randint(1, 30))
                with lock:
                    consumed.append(tracked.consumed)
                continue
            held = app.reserve("mixer", "purchased_credits", rng.randint(1, 60))
            if not held.success:
                assert held.error == RefusalCode.INSUFFICIENT_BALANCE
                continue
            assert held.reservation_id is not None and held.remaining >= 0
            if roll < 0.45:
                closed = app.release(held.reservation_id)
                assert closed.consumed == 0 and closed.released == held.held
            else:
                closed = app.settle(held.reservation_id, rng.randint(0, 2 * held.held))
                assert closed.success and closed.consumed + closed.shortfall >= 0
            with lock:
                consumed.append(closed.consumed)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    balance = {e.entitlement_id: e.remaining for e in app.state("mixer").entitlements}
    assert balance["purchased_credits"] == 1_000 - sum(consumed) >= 0
    assert_verified(backend, app.app_id)


def test_holds_found_expired_late_are_each_back_before_the_reset_after_them(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    """Two holds expire just before a monthly reset and are found a day later: each is
    released at its own expiry, so the reset's rollover sees all the units (pro: 1000 a
    month, up to 500 carried)."""
    app.grant_product("alice", "pro")  # 2026-01-31 12:00: resets on the 28th at 12:00
    clock.advance(days=27, hours=23, minutes=58)
    first = app.reserve("alice", "monthly_credits", 100, ttl_seconds=60)  # the free tier's
    second = app.reserve("alice", "monthly_credits", 600, ttl_seconds=90)  # pro's
    assert first.success and second.success
    clock.advance(days=1)
    pro = next(
        e.remaining
        for e in app.state("alice").entitlements
        if e.entitlement_id == "monthly_credits" and e.remaining > 100
    )
    assert pro == 1000 + 500  # not 1000 + 400: the 600 were back before the reset
    assert {app.reservation(r.reservation_id or "").state for r in (first, second)} == {"expired"}
    assert_verified(backend, app.app_id)
