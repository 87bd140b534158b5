"""`services.access` applying a provider's change at the provider's instant (`as_of`,
`at`), whenever we learn of it; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import revenipe
from revenipe.services import access
from revenipe.services.customers import ensure_customer
from revenipe.storage import grants as grant_store
from revenipe.storage import ledger as ledger_store
from revenipe.storage import sources as source_store

from support import Clock, assert_verified


def _entries(
    backend: revenipe.Backend, app_id: str, customer_id: str, source_id: str
) -> list[tuple[Any, ...]]:
    with backend.database.read() as conn:
        grant_ids = {g.grant.id for g in grant_store.list_grants_of_source(conn, source_id)}
        rows = ledger_store.list_ledger_entries(conn, app_id, customer_id=customer_id)
    return [
        (r.kind, r.amount, r.balance_after, r.effective_at, r.recorded_at)
        for r in rows
        if r.grant_id in grant_ids
    ]


def test_a_refund_learned_late_is_revoked_as_of_the_refund(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    ctx = backend.context
    customer = ensure_customer(ctx, app.app_id, "dave")
    bought, refunded = clock.now, clock.now + timedelta(days=3)
    clock.advance(days=60)  # pack_50 (P30D) would have expired by now
    with backend.database.write() as conn:
        app_row = ctx.require_app(conn, app.app_id)
        catalog = ctx.catalog(conn, app_row)
        source = access.open_purchase(
            conn,
            catalog,
            customer,
            catalog.products_by_id["pack_50"],
            bought,
            clock.now,
            provider="stripe",
            provider_ref="pi_late",
            as_of=refunded,
        )
        ended = access.revoke_source(conn, source, clock.now, status="refunded", at=refunded)
    assert (ended.status, ended.ended_at) == ("refunded", refunded)
    entries = _entries(backend, app.app_id, customer.id, source.id)
    assert [(k, a, b, e) for k, a, b, e, _ in entries] == [
        ("granted", 50, 50, bought),
        ("revoked", -50, 0, refunded),
    ], "revoked at the refund, not expired at day 30"
    assert all(recorded == clock.now for *_, recorded in entries), "recorded when learned"
    assert_verified(backend)


def test_a_revocation_is_never_dated_in_the_future(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    ctx = backend.context
    customer = ensure_customer(ctx, app.app_id, "erin")
    with backend.database.write() as conn:
        app_row = ctx.require_app(conn, app.app_id)
        catalog = ctx.catalog(conn, app_row)
        source = access.open_purchase(
            conn,
            catalog,
            customer,
            catalog.products_by_id["pack_50"],
            clock.now,
            clock.now,
            provider="stripe",
            provider_ref="pi_skew",
        )
        ended = access.revoke_source(
            conn, source, clock.now, status="disputed", at=clock.now + timedelta(minutes=5)
        )
    assert ended.ended_at == clock.now
    assert [(k, e) for k, _, _, e, _ in _entries(backend, app.app_id, customer.id, source.id)] == [
        ("granted", clock.now),
        ("revoked", clock.now),
    ]
    assert_verified(backend)


def test_a_missed_renewal_and_a_later_plan_change_learned_at_once(
    backend: revenipe.Backend, app: revenipe.App, clock: Clock
) -> None:
    """One state jump holds a renewal we never heard of (period end b) and a plan change
    after it (c > b): the old plan's grants reset at b, then end at c."""
    import dataclasses

    from revenipe.engine import subscriptions as lifecycle
    from revenipe.engine.periods import Interval

    ctx = backend.context
    customer = ensure_customer(ctx, app.app_id, "fay")
    start = clock.now
    with backend.database.write() as conn:
        app_row = ctx.require_app(conn, app.app_id)
        catalog = ctx.catalog(conn, app_row)
        sub = lifecycle.start(
            lifecycle.Plan("pro", Interval.MONTH, 1000), start, payment_method_attached=True
        )
        source = access.open_subscription(
            conn,
            catalog,
            customer,
            sub,
            start,
            start,
            kind="subscription",
            provider="stripe",
            provider_ref="sub_jump",
        )
    b = sub.period_end
    c = b + timedelta(days=10)
    clock.now = c + timedelta(days=1)
    with backend.database.write() as conn:
        source = source_store.get_source(conn, customer.id, source.id)
        assert source is not None
        second = lifecycle.advance(sub, b)[0]
        moved = dataclasses.replace(second, product_id="free")  # as the provider reports it
        catalog = ctx.catalog(conn, ctx.require_app(conn, app.app_id))
        access.update_subscription(
            conn,
            catalog,
            source,
            moved,
            clock.now,
            product_changes=[lifecycle.ProductChange(c, "pro", "free")],
        )
    with backend.database.read() as conn:
        rows = grant_store.list_grants_of_source(conn, source.id)
        pro_grant = min(rows, key=lambda r: r.grant.created_at).grant.id
        entries = [
            (r.kind, r.amount, r.effective_at)
            for r in ledger_store.list_ledger_entries(conn, app.app_id, customer_id=customer.id)
            if r.grant_id == pro_grant
        ]
    # pro's 1000 granted, refilled at b (500 of the unused 1000 carried), ended at c.
    assert entries == [
        ("granted", 1000, start),
        ("reset", 500, b),
        ("expired", -1500, c),
    ], entries
    assert_verified(backend)
