"""Usage alerts beyond a track, and the track's shortcut past them (docs/adr/0019).

Every change that moves a balance (a grant, a hold, its settlement, release or expiry, a
reversal) evaluates the alerts at once; a track skips the alerts' read when its own
balances show it moved past no threshold and the customer's memory is current. The
randomized test checks the invariant that makes the shortcut safe: after every change,
the memory of every alerted target is exactly the set of thresholds its stored balance
is at or below, whatever mix of changes came before (catalog changes included)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import revenipe
from revenipe.engine.alerts import Threshold
from revenipe.services import access
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.outbound import endpoints as endpoint_service
from revenipe.services.outbound.targets import TargetPolicy
from revenipe.storage import customers as customer_store
from revenipe.storage import outbound_events as outbox
from revenipe.storage import sources as source_store

from support import DEMO_CATALOG, Clock

LOCAL = TargetPolicy(allow_private=True, require_https=False)
_KEY_LINE = "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"


def _catalog(key_alerts: str, purchased_alerts: str) -> revenipe.Catalog:
    text = DEMO_CATALOG.replace(_KEY_LINE, _KEY_LINE + f"    alerts: {key_alerts}\n")
    text = text.replace(
        "  - id: purchased_credits\n    name: Purchased credits\n    type: metered\n",
        "  - id: purchased_credits\n    name: Purchased credits\n    type: metered\n"
        f"    alerts: {purchased_alerts}\n",
    )
    return revenipe.load_catalog(text)


CATALOGS = (
    _catalog(
        "[{remaining_percent: 50}, {remaining_percent: 20}, {remaining: 0}]", "[{remaining: 10}]"
    ),
    _catalog("[{remaining_percent: 80}, {remaining: 5}]", "[{remaining: 30}, {remaining: 0}]"),
)


@pytest.fixture
def alert_app(backend: revenipe.Backend) -> revenipe.App:
    created = backend.create_app("alerts", CATALOGS[0])
    return backend.app(created.app.id)


def _subscribe(app: revenipe.App, types: list[str] | None = None) -> None:
    endpoint_service.create_endpoint(app.context, app.app_id, LOCAL, "http://127.0.0.1:9/", types)


def _events(app: revenipe.App) -> list[dict[str, Any]]:
    events = endpoint_service.list_events(app.context, app.app_id, after=0, limit=10_000)
    return [json.loads(e.body) for e in events]


def _customer_id(app: revenipe.App, external_id: str) -> str:
    with app.context.db.read() as conn:
        row = customer_store.find_customer(conn, app.app_id, external_id=external_id)
    assert row is not None
    return row.id


def _memory_and_truth(app: revenipe.App, customer_id: str) -> dict[str, tuple[set[str], set[str]]]:
    """target -> (thresholds remembered as crossed, thresholds the stored balance is at
    or below), for every alerted target of the app's catalog."""
    catalog = app.catalog()
    targets = sorted(catalog.alerts_by_target)
    found: dict[str, tuple[set[str], set[str]]] = {}
    with app.context.db.read() as conn:
        app_row = app.context.require_app(conn, app.app_id)
        now = app.context.now_for(app_row)
        entitlements = sorted(
            {
                e
                for t in targets
                for e in (
                    catalog.usage_keys_by_id[t].entitlement_ids
                    if t in catalog.usage_keys_by_id
                    else (t,)
                )
            }
        )
        view = outbox.read_alert_view(conn, app.app_id, customer_id, entitlements, targets, now)
    for target in targets:
        thresholds: tuple[Threshold, ...] = catalog.alerts_by_target[target]
        ids = (
            catalog.usage_keys_by_id[target].entitlement_ids
            if target in catalog.usage_keys_by_id
            else (target,)
        )
        left = sum(view.balances.get(e, (0, 0))[0] for e in ids)
        granted = sum(view.balances.get(e, (0, 0))[1] for e in ids)
        declared = {t.key for t in thresholds}
        remembered = view.crossed.get(target, set()) & declared
        truth = {t.key for t in thresholds if t.is_crossed(left, granted)}
        found[target] = (remembered, truth)
    return found


def test_a_grant_recovers_at_once_and_a_hold_crosses(alert_app: revenipe.App) -> None:
    _subscribe(alert_app)
    assert alert_app.track("u1", "credits", 100).remaining == 0  # the free tier, emptied
    before = len(_events(alert_app))
    # A grant lifts the key back over every threshold: recovered now, not at the next
    # track.
    alert_app.grant_entitlement("u1", "purchased_credits", 400)
    recovered = [
        e
        for e in _events(alert_app)[before:]
        if e["type"].endswith("recovered") and e["data"]["id"] == "credits"
    ]
    assert sorted(json.dumps(e["data"]["threshold"]) for e in recovered) == sorted(
        ['{"remaining": 0}', '{"remaining_percent": 20}', '{"remaining_percent": 50}']
    )
    assert all(e["data"]["remaining"] == 400 for e in recovered)
    # A hold of 350 of 500 granted (400 left) takes it to 50: 50% and 20% crossed.
    before = len(_events(alert_app))
    held = alert_app.reserve("u1", "credits", 350)
    assert held.success
    crossed = _events(alert_app)[before:]
    assert sorted(
        (e["type"], json.dumps(e["data"]["threshold"]))
        for e in crossed
        if e["data"]["id"] == "credits"
    ) == [
        ("usage.threshold_crossed", '{"remaining_percent": 20}'),
        ("usage.threshold_crossed", '{"remaining_percent": 50}'),
    ]
    # Releasing it recovers both.
    before = len(_events(alert_app))
    alert_app.release(held.reservation_id or "")
    assert sorted(
        e["type"] for e in _events(alert_app)[before:] if e["data"]["id"] == "credits"
    ) == [
        "usage.threshold_recovered",
        "usage.threshold_recovered",
    ]


def test_a_reversal_recovers(alert_app: revenipe.App) -> None:
    _subscribe(alert_app, ["usage.threshold_recovered"])
    spent = alert_app.track("u1", "credits", 90)
    assert spent.remaining == 10
    assert _events(alert_app) == []
    alert_app.reverse(spent.usage_event_id or "", 30)  # 40 left: over 20%, not 50%
    recovered = _events(alert_app)
    assert [json.dumps(e["data"]["threshold"]) for e in recovered] == ['{"remaining_percent": 20}']
    assert recovered[0]["data"]["remaining"] == 40


def test_an_expired_hold_is_reported(alert_app: revenipe.App, clock: Clock) -> None:
    _subscribe(alert_app, ["reservation.expired", "usage.threshold_recovered"])
    held = alert_app.reserve("u1", "credits", 60, ttl_seconds=30)
    assert held.success
    clock.advance(seconds=31)
    alert_app.state("u1")  # a read applies what fell due: the hold expires
    events = _events(alert_app)
    expired = [e for e in events if e["type"] == "reservation.expired"]
    assert len(expired) == 1
    data = expired[0]["data"]
    assert data["reservation_id"] == held.reservation_id
    assert (data["id"], data["held"], data["released"], data["remaining"]) == (
        "credits",
        60,
        60,
        100,
    )
    assert data["customer_id"] == "u1" and data["sequence"] >= 1
    # The 50% crossed by the hold recovered when it went back.
    assert [e["data"]["threshold"] for e in events if e["type"].endswith("recovered")] == [
        {"remaining_percent": 50}
    ]
    # Applied once: more reads write nothing more.
    alert_app.state("u1")
    assert len(_events(alert_app)) == len(events)


def test_alerts_on_a_priced_action_fire_for_its_usage_key(backend: revenipe.Backend) -> None:
    text = DEMO_CATALOG.replace(
        _KEY_LINE,
        _KEY_LINE + "    alerts: [{remaining_percent: 50}]\n    costs: {summary: 30}\n",
    )
    app = backend.app(backend.create_app("priced", revenipe.load_catalog(text)).app.id)
    _subscribe(app, ["usage.threshold_crossed"])
    assert app.track("u1", "summary", 2).success  # 60 of 100
    assert [e["data"]["id"] for e in _events(app)] == ["credits"]


class _RandomChanges:
    """One random change of each kind to customer u1; each returns whether it wrote."""

    def __init__(self, app: revenipe.App, clock: Clock, rng: random.Random) -> None:
        self.app, self.clock, self.rng = app, clock, rng
        self.open_holds: list[str] = []
        self.spent: list[str] = []
        self.sources: list[str] = []

    def track(self) -> bool:
        result = self.app.track("u1", "credits", self.rng.choice([1, 3, 9, 17, 40]))
        if result.success and result.usage_event_id:
            self.spent.append(result.usage_event_id)
        return True

    def track_entitlement(self) -> bool:
        self.app.track("u1", "purchased_credits", self.rng.choice([1, 5, 12]))
        return True

    def grant(self) -> bool:
        granted = self.app.grant_entitlement(
            "u1", "purchased_credits", self.rng.choice([5, 20, 60])
        )
        self.sources.append(granted.access_source_id)
        return True

    def pack(self) -> bool:
        self.sources.append(self.app.grant_product("u1", "pack_50").access_source_id)
        return True

    def revoke(self) -> bool:
        """A refund: the source's grants taken back by the service a provider's webhook
        calls. It looks at no alert itself; the next change must."""
        if not self.sources:
            return False
        source_id = self.sources.pop(self.rng.randrange(len(self.sources)))
        ctx = self.app.context
        with ctx.db.write() as conn:
            app = ctx.require_app(conn, self.app.app_id)
            now = ctx.now_for(app)
            customer = locked_customer(
                ctx, conn, app, CustomerRef.external("u1"), create=False, now=now
            )
            source = source_store.get_source(conn, customer.id, source_id)
            assert source is not None
            if source.ended_at is None:
                access.revoke_source(conn, source, now, status="refunded")
        return False  # nothing evaluated the alerts: checked after the next change

    def hold(self) -> bool:
        held = self.app.reserve("u1", "credits", self.rng.choice([5, 25]), ttl_seconds=60)
        if held.success and held.reservation_id:
            self.open_holds.append(held.reservation_id)
        return True

    def close(self) -> bool:
        if not self.open_holds:
            return False
        reservation_id = self.open_holds.pop(self.rng.randrange(len(self.open_holds)))
        if self.app.reservation(reservation_id).state != "held":
            return True  # the read applied its expiry
        if self.rng.random() < 0.5:
            self.app.release(reservation_id)
        else:
            self.app.settle(reservation_id, self.rng.choice([0, 3, 10]))
        return True

    def reverse(self) -> bool:
        if not self.spent:
            return False
        self.app.reverse(self.spent.pop(self.rng.randrange(len(self.spent))))
        return True

    def time(self) -> bool:
        self.clock.advance(days=self.rng.choice([1, 11, 31]), seconds=self.rng.choice([0, 61]))
        return False  # nothing written yet: resets and expiries wait for a change

    def catalog(self) -> bool:
        self.app.apply_catalog(self.rng.choice(CATALOGS))
        return False  # the memory catches up at the next change

    def subscribe(self) -> bool:
        _subscribe(self.app)
        return False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memory_always_matches_the_stored_balance(
    alert_app: revenipe.App, clock: Clock, seed: int
) -> None:
    """Random changes of every kind, with and without an endpoint listening; after each,
    every alerted target's memory is what its balance says. A track that wrongly
    skipped its look would leave a memory behind the balance."""
    rng = random.Random(seed)
    alert_app.login("u1")
    customer_id = _customer_id(alert_app, "u1")
    changes = _RandomChanges(alert_app, clock, rng)
    kinds = ["track"] * 6 + [
        "track_entitlement", "grant", "pack", "hold", "close", "reverse", "time", "catalog",
        "subscribe", "revoke",
    ]  # fmt: skip
    for step in range(70):
        kind = rng.choice(kinds)
        if not getattr(changes, kind)():
            continue
        for target, (remembered, truth) in _memory_and_truth(alert_app, customer_id).items():
            assert remembered == truth, f"step {step} ({kind}): {target} {remembered} vs {truth}"
