"""Outbound webhooks on SQLite and PostgreSQL, in-process: endpoints, the outbox written
with each track, the delivery worker's retries, usage alerts, and the SSRF guard.

Every delivery's signature is checked with the public `standardwebhooks` package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

import revenipe
from revenipe.engine.errors import RevenipeError
from revenipe.services.outbound import endpoints as endpoint_service
from revenipe.services.outbound.targets import TargetPolicy, resolve
from revenipe.services.outbound.worker import DeliverySettings, DeliveryWorker

from support import DEMO_CATALOG, Clock
from webhook_receiver import Receiver

LOCAL = TargetPolicy(allow_private=True, require_https=False)
USAGE = ["usage.threshold_crossed", "usage.threshold_recovered", "usage.exhausted"]
ALERTS_CATALOG = DEMO_CATALOG.replace(
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
    "    alerts: [{remaining_percent: 50}, {remaining_percent: 20}, {remaining: 0}]\n",
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def alert_app(backend: revenipe.Backend) -> revenipe.App:
    created = backend.create_app("alerts", revenipe.load_catalog(ALERTS_CATALOG))
    return backend.app(created.app.id)


def _worker(app: revenipe.App, **overrides: Any) -> DeliveryWorker:
    settings = DeliverySettings(
        retry_schedule=(1.0, 1.0, 1.0), jitter=0.0, policy=LOCAL, senders=2, **overrides
    )
    return DeliveryWorker(app.context, settings)


def _drain(worker: DeliveryWorker, clock: Clock, rounds: int = 10) -> None:
    """Run the worker, moving the clock past each retry's time."""
    try:
        for _ in range(rounds):
            worker.run_once()
            clock.advance(seconds=2)
    finally:
        worker.stop()


def _verified(secret: str, received: Any) -> dict[str, Any]:
    payload = Webhook(secret).verify(received.body, received.headers)
    assert isinstance(payload, dict)
    return payload


def test_retries_until_received_each_signature_verified(
    alert_app: revenipe.App, receiver: Receiver, clock: Clock
) -> None:
    receiver.failures = 2
    created = endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, USAGE
    )
    assert created.secret.startswith("whsec_")
    # 100 credits: 60 crosses 50%, then 25 more crosses 20%, then 15 empties it.
    for value in (60, 25, 15):
        assert alert_app.track("u1", "credits", value).success
    _drain(_worker(alert_app), clock)

    successes = receiver.successes()
    ids = [r.headers["webhook-id"] for r in successes]
    assert len(ids) == len(set(ids)), "an event was received twice as a success"
    assert receiver.attempts_per_id() == {i: 3 for i in ids}
    payloads = [_verified(created.secret, r) for r in successes]
    types = sorted(p["type"] for p in payloads)
    assert types == [
        "usage.exhausted",
        "usage.threshold_crossed",
        "usage.threshold_crossed",
        "usage.threshold_crossed",
    ]
    sequences = sorted(p["data"]["sequence"] for p in payloads)
    assert sequences == [1, 2, 3, 4]
    crossed = {
        json.dumps(p["data"]["threshold"]) for p in payloads if p["type"].endswith("crossed")
    }
    assert crossed == {'{"remaining_percent": 50}', '{"remaining_percent": 20}', '{"remaining": 0}'}
    views = endpoint_service.list_deliveries(
        alert_app.context, alert_app.app_id, created.endpoint.id, before_id=None, limit=100
    )
    assert {v.delivery.status for v in views} == {"delivered"}
    assert all([a.status_code for a in v.attempts] == [500, 500, 200] for v in views)


def test_thresholds_jump_reset_and_replay(
    alert_app: revenipe.App, receiver: Receiver, clock: Clock
) -> None:
    created = endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, USAGE
    )
    # One track from 100 to 10 crosses 50% and 20% at once: both fire.
    first = alert_app.track("u1", "credits", 90, idempotency_key="k1")
    assert first.success and first.remaining == 10
    # Its replay, and a track that crosses nothing new, fire nothing.
    assert alert_app.track("u1", "credits", 90, idempotency_key="k1").replayed
    assert alert_app.track("u1", "credits", 1).success
    # The month ends: the reset refills to 100, which recovers both at the next track.
    clock.advance(days=32)
    assert alert_app.track("u1", "credits", 1).remaining == 99
    _drain(_worker(alert_app), clock, rounds=3)
    payloads = [_verified(created.secret, r) for r in receiver.successes()]
    seen = [(p["type"], p["data"]["threshold"]) for p in payloads]
    assert sorted(seen, key=str) == sorted(
        [
            ("usage.threshold_crossed", {"remaining_percent": 50}),
            ("usage.threshold_crossed", {"remaining_percent": 20}),
            ("usage.threshold_recovered", {"remaining_percent": 50}),
            ("usage.threshold_recovered", {"remaining_percent": 20}),
        ],
        key=str,
    )
    crossed = [p for p in payloads if p["type"] == "usage.threshold_crossed"]
    assert all(p["data"]["remaining"] == 10 and p["data"]["granted"] == 100 for p in crossed)
    assert all(p["data"]["customer_id"] == "u1" and p["data"]["id"] == "credits" for p in payloads)


def test_refusals_emit_at_most_one_a_minute_and_nothing_else(
    alert_app: revenipe.App, receiver: Receiver, clock: Clock
) -> None:
    created = endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, ["usage.refused"]
    )
    for _ in range(3):
        assert not alert_app.track("u1", "credits", 1000).success
    clock.advance(seconds=61)
    assert not alert_app.track("u1", "credits", 1000).success
    events = endpoint_service.list_events(alert_app.context, alert_app.app_id, after=0, limit=100)
    assert [e.type for e in events] == ["usage.refused", "usage.refused"]
    _drain(_worker(alert_app), clock, rounds=2)
    payloads = [_verified(created.secret, r) for r in receiver.successes()]
    assert [p["data"]["error"] for p in payloads] == ["insufficient_balance"] * 2
    assert [p["data"]["requested"] for p in payloads] == [1000, 1000]


def test_no_endpoint_no_event_and_an_unsubscribed_type_is_not_stored(
    alert_app: revenipe.App, receiver: Receiver
) -> None:
    alert_app.track("u1", "credits", 100)
    assert (
        endpoint_service.list_events(alert_app.context, alert_app.app_id, after=0, limit=10) == []
    )
    endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, ["usage.refused"]
    )
    alert_app.track("u2", "credits", 100)
    assert (
        endpoint_service.list_events(alert_app.context, alert_app.app_id, after=0, limit=10) == []
    )


def test_events_pulled_in_order_after_a_cursor(alert_app: revenipe.App, receiver: Receiver) -> None:
    endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, USAGE
    )
    alert_app.track("u1", "credits", 60)
    alert_app.track("u1", "credits", 40)
    events = endpoint_service.list_events(alert_app.context, alert_app.app_id, after=0, limit=100)
    assert len(events) == 4
    after_two = endpoint_service.list_events(
        alert_app.context, alert_app.app_id, after=events[1].seq, limit=100
    )
    assert [e.id for e in after_two] == [e.id for e in events[2:]]


def test_ping_redeliver_rotation_and_disable(
    alert_app: revenipe.App, receiver: Receiver, clock: Clock
) -> None:
    ctx, app_id = alert_app.context, alert_app.app_id
    created = endpoint_service.create_endpoint(ctx, app_id, LOCAL, receiver.url)
    endpoint_service.send_ping(ctx, app_id, created.endpoint.id)
    _drain(_worker(alert_app), clock, rounds=1)
    (first,) = receiver.successes()
    assert _verified(created.secret, first)["type"] == "ping"
    # Rotated: the old and the new secret both verify during the overlap.
    rotated = endpoint_service.rotate_secret(ctx, app_id, created.endpoint.id)
    (view,) = endpoint_service.list_deliveries(
        ctx, app_id, created.endpoint.id, before_id=None, limit=5
    )
    endpoint_service.redeliver(ctx, app_id, view.delivery.id)
    _drain(_worker(alert_app), clock, rounds=1)
    again = receiver.successes()[1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    _verified(rotated.secret, again)
    _verified(created.secret, again)
    # Failing for five days in a row disables the endpoint, saying why.
    receiver.failures = 10**6
    endpoint_service.send_ping(ctx, app_id, created.endpoint.id)
    worker = _worker(alert_app, disable_after=timedelta(seconds=3))
    _drain(worker, clock, rounds=4)
    endpoint = endpoint_service.get_endpoint(ctx, app_id, created.endpoint.id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None and "500" in endpoint.disabled_reason


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "https://[::1]/hook",
        "http://example.com/hook",
        "https://user:pw@example.com/hook",
        "ftp://example.com/x",
        "https://exa mple.com/\n",
    ],
)
def test_unsafe_targets_are_refused(url: str) -> None:
    with pytest.raises(RevenipeError) as refused:
        resolve(url, TargetPolicy())
    assert refused.value.code.value == "unsafe_webhook_url"


def test_private_targets_allowed_with_the_flag() -> None:
    assert resolve("http://127.0.0.1:9/x", LOCAL).address == "127.0.0.1"
    assert resolve("http://localhost:9/x", LOCAL).address in {"127.0.0.1", "::1"}


def _bodies(app: revenipe.App) -> list[dict[str, Any]]:
    events = endpoint_service.list_events(app.context, app.app_id, after=0, limit=1000)
    return [json.loads(e.body) for e in events]


def test_access_and_grant_events_with_a_sequence_per_customer(
    alert_app: revenipe.App, receiver: Receiver, clock: Clock
) -> None:
    endpoint_service.create_endpoint(
        alert_app.context,
        alert_app.app_id,
        LOCAL,
        receiver.url,
        ["access.granted", "grant.reset", "grant.expired"],
    )
    alert_app.login("u1")  # the free tier, a default product
    pack = alert_app.grant_product("u1", "pack_50")
    assert alert_app.track("u1", "monthly_credits", 30).success
    # 32 days on: the month reset the free tier's grant, the 30-day pack expired; both
    # are written (and reported) by the next change that settles them.
    clock.advance(days=32)
    assert alert_app.track("u1", "credits", 1).success
    bodies = _bodies(alert_app)
    kinds = [b["type"] for b in bodies]
    assert kinds[:2] == ["access.granted", "access.granted"]
    assert sorted(kinds[2:]) == ["grant.expired", "grant.reset"]
    assert bodies[1]["data"]["access_source_id"] == pack.access_source_id
    assert bodies[1]["data"]["product_id"] == "pack_50"
    reset = next(b for b in bodies if b["type"] == "grant.reset")["data"]
    assert reset["entitlement_id"] == "monthly_credits" and reset["balance_after"] == 100
    expired = next(b for b in bodies if b["type"] == "grant.expired")["data"]
    assert expired["entitlement_id"] == "purchased_credits" and expired["balance_after"] == 0
    assert [b["data"]["sequence"] for b in bodies] == [1, 2, 3, 4]
    assert all(b["data"]["customer_id"] == "u1" for b in bodies)


def test_a_track_rolled_back_leaves_no_event(
    alert_app: revenipe.App, receiver: Receiver, backend: revenipe.Backend
) -> None:
    """An event is written in the change's transaction: if that transaction rolls back
    (here: the database refuses the usage event's write), the event goes with it."""
    endpoint_service.create_endpoint(
        alert_app.context, alert_app.app_id, LOCAL, receiver.url, USAGE
    )
    assert alert_app.track("u1", "credits", 60, idempotency_key="same").success
    events_before = _bodies(alert_app)
    assert len(events_before) == 1
    with pytest.raises(RevenipeError):
        alert_app.track("u1", "credits", 30, idempotency_key="same")  # key reused: refused
    assert _bodies(alert_app) == events_before
