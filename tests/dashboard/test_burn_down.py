"""The customer page's burn-down reads the ledger summed per span of time (so a long
history costs the same as a short one): the sums must equal the entries they stand
for, and the chart must start and end where the entries one by one say."""

from __future__ import annotations

from datetime import timedelta

import revenipe
from revenipe.dashboard.customer_view import (
    DEFAULT_SPAN,
    TimelineEntry,
    burn_down_chart,
    load_customer,
)
from revenipe.dashboard.format import Formatter
from revenipe.storage import customers as customer_store
from revenipe.storage import ledger as ledger_store

from support import Clock


def _history(app: revenipe.App, clock: Clock) -> str:
    """33 days of tracks every 5 hours (a monthly reset among them), a grant and a
    reversal in between."""
    app.login("u1")
    spent = []
    for step in range(160):
        clock.advance(hours=5)
        result = app.track("u1", "credits", 1 + step % 3)
        if result.success and result.usage_event_id:
            spent.append(result.usage_event_id)
        if step == 40:
            app.grant_entitlement("u1", "purchased_credits", 30)
        if step == 60:
            app.reverse(spent[3])
    with app.context.db.read() as conn:
        row = customer_store.find_customer(conn, app.app_id, external_id="u1")
    assert row is not None
    return row.id


def test_sums_equal_the_entries_they_stand_for(app: revenipe.App, clock: Clock) -> None:
    customer_id = _history(app, clock)
    now = clock()
    since = now - DEFAULT_SPAN
    with app.context.db.read() as conn:
        entries = ledger_store.list_customer_entries(conn, customer_id, limit=100_000)
        sums = ledger_store.list_customer_entry_sums(
            conn, customer_id, since=since, seconds=3600 * 7
        )
    recent = [e for e in entries if e.effective_at >= since]
    assert sum(s.amount for s in sums) == sum(e.amount for e in recent)
    for grant_id in {e.grant_id for e in recent}:
        assert sum(s.amount for s in sums if s.grant_id == grant_id) == sum(
            e.amount for e in recent if e.grant_id == grant_id
        )
    assert len(sums) < len(recent)  # several entries a span
    assert sorted(s.last_effective_at for s in sums) == [s.last_effective_at for s in sums]
    starting = [e for e in recent if e.kind in ("granted", "reset")]
    assert any(e.kind == "reset" for e in starting)
    assert sorted(
        (s.grant_id, s.amount, s.balance_after) for s in sums if s.starts_period
    ) == sorted((e.grant_id, e.amount, e.balance_after) for e in starting)


def test_the_chart_starts_and_ends_where_the_entries_say(app: revenipe.App, clock: Clock) -> None:
    customer_id = _history(app, clock)
    view = load_customer(app.context, app.app_id, customer_id)
    fmt = Formatter("UTC")
    with app.context.db.read() as conn:
        entries = ledger_store.list_customer_entries(conn, customer_id, limit=100_000)
    grant_entitlement = {
        g.grant.id: g.grant.entitlement_id for b in view.balances for g in b.grants
    }
    one_by_one = sorted(
        (
            TimelineEntry(
                e.grant_id,
                grant_entitlement.get(e.grant_id, ""),
                e.kind,
                e.amount,
                e.balance_after,
                e.effective_at,
                False,
            )
            for e in entries
        ),
        key=lambda e: e.effective_at,
    )
    for balance in view.balances:
        if balance.kind == "boolean":
            continue
        summed = view.burn_down(balance, fmt)
        exact = burn_down_chart(balance, one_by_one, view.now, fmt)
        assert summed.description == exact.description
    assert view.now - clock() < timedelta(seconds=1)
