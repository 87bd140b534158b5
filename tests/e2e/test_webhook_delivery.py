"""Outbound webhooks between real server processes and a real receiver on localhost.

- every event is delivered once as a success through failures (500, 500, then 200),
  each signature verified by the `standardwebhooks` package;
- a server SIGKILLed while deliveries are pending, then restarted: every event of every
  acknowledged track arrives (its `webhook-id` the same on each attempt), none for a
  refused track;
- two servers on one PostgreSQL deliver 1,000 events, none of them twice.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from e2e.harness import E2E_CATALOG, Server, Servers
from reliability.faults import wait_for

from webhook_receiver import Receiver

# Every customer starts with 100 monthly credits (the free tier).
ALERTS_CATALOG = E2E_CATALOG.replace(
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
    "    alerts: [{remaining: 0}]\n",
)
FAST_DELIVERY = {
    "REVENIPE_ALLOW_PRIVATE_WEBHOOKS": "1",
    "REVENIPE_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.3"] * 30),
    "REVENIPE_WEBHOOK_POLL_SECONDS": "0.05",
    "REVENIPE_WEBHOOK_LEASE_SECONDS": "3",
    "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "0",
}
TYPES = ["usage.exhausted", "usage.threshold_crossed"]


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(ALERTS_CATALOG)
    return path


@pytest.fixture
def receiver() -> Any:
    started = Receiver().start()
    yield started
    started.stop()


def _endpoint(server: Server, url: str) -> str:
    with server.api() as api:
        answer = api.post("/v1/webhook_endpoints", json={"url": url, "event_types": TYPES})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"id", "url", "event_types", "enabled", "secret"}
    assert body["enabled"] is True and sorted(body["event_types"]) == TYPES
    secret: str = body["secret"]
    return secret


def _track(server: Server, customer: str, value: int, key: str) -> dict[str, Any]:
    """Track until an answer comes (the server may be down, or die before answering)."""
    while True:
        try:
            with server.api(timeout=5.0) as api:
                answer = api.post(
                    f"/v1/customers/{customer}/track",
                    json={"id": "credits", "value": value},
                    headers={"Idempotency-Key": key},
                )
            if answer.status_code == 200:
                result: dict[str, Any] = answer.json()
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def _delivered(receiver: Receiver, secret: str) -> dict[tuple[str, str], int]:
    """(client id, type) -> how many times it arrived as a success (signatures checked)."""
    found: dict[tuple[str, str], int] = defaultdict(int)
    for received in receiver.successes():
        payload = Webhook(secret).verify(received.body, received.headers)
        found[payload["data"]["client_id"], payload["type"]] += 1
    return found


def _same_body_per_id(receiver: Receiver) -> None:
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for received in receiver.received:
        bodies[received.headers["webhook-id"]].add(received.body)
    assert all(len(b) == 1 for b in bodies.values()), "a webhook-id carried two bodies"


def test_failures_then_success_each_event_once(servers: Servers, receiver: Receiver) -> None:
    servers.env.update(FAST_DELIVERY)
    server = servers.start()
    receiver.failures = 2
    secret = _endpoint(server, receiver.url)
    emptied = [_track(server, f"user-{i}", 100, f"k{i}") for i in range(5)]
    assert all(r["success"] and r["remaining"] == 0 for r in emptied)
    refused = _track(server, "user-0", 1, "refused")
    assert not refused["success"]
    wait_for(lambda: len(receiver.successes()) >= 10, 30, "ten events delivered")
    time.sleep(1.0)
    delivered = _delivered(receiver, secret)
    assert len(delivered) == 10 and set(delivered.values()) == {1}
    assert {t for _, t in delivered} == set(TYPES)
    assert all(n == 3 for n in receiver.attempts_per_id().values())
    _same_body_per_id(receiver)
    with server.api() as api:
        (endpoint,) = api.get("/v1/webhook_endpoints").json()["endpoints"]
        page = api.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()
        events = api.get("/v1/events", params={"after": 0}).json()["events"]
    assert len(page["deliveries"]) == 10
    assert all(d["status"] == "delivered" for d in page["deliveries"])
    assert all(
        [a["status_code"] for a in d["attempts"]] == [500, 500, 200] for d in page["deliveries"]
    )
    assert len(events) == 10


def test_sigkill_with_pending_deliveries_loses_nothing(
    servers: Servers, receiver: Receiver
) -> None:
    servers.env.update(FAST_DELIVERY)
    server = servers.start()
    receiver.failures = 3
    secret = _endpoint(server, receiver.url)
    answers: dict[str, dict[str, Any]] = {}
    current = {"server": server}

    def load() -> None:
        for i in range(30):
            customer = f"crash-{i}"
            # Every fifth customer asks for more than they have: refused, no event.
            value = 1000 if i % 5 == 0 else 100
            answers[customer] = _track(current["server"], customer, value, f"key-{i}")

    worker = threading.Thread(target=load)
    worker.start()
    for _ in range(3):
        wait_for(lambda: len(receiver.received) > 0, 30, "deliveries being attempted")
        time.sleep(0.3)
        servers.kill(current["server"])
        time.sleep(0.2)
        current["server"] = servers.start(reuse=server, port=server.port)
    worker.join(timeout=120)
    assert not worker.is_alive()
    emptied = {c: a for c, a in answers.items() if a["success"]}
    refused = {c: a for c, a in answers.items() if not a["success"]}
    assert len(emptied) == 24 and len(refused) == 6
    with current["server"].api() as api:
        pulled = api.get("/v1/events", params={"after": 0, "limit": 1000}).json()["events"]
    assert len(pulled) == 2 * len(emptied)
    wait_for(
        lambda: len({r.headers["webhook-id"] for r in receiver.successes()}) >= 2 * len(emptied),
        60,
        "every event delivered",
    )
    delivered = _delivered(receiver, secret)
    customer_of = {e["body"]["data"]["client_id"]: e["body"]["data"]["customer_id"] for e in pulled}
    got = {(customer_of[c], t) for c, t in delivered}
    assert got == {(c, t) for c in emptied for t in TYPES}
    assert not any(customer_of.get(c) in refused for c, _ in delivered)
    _same_body_per_id(receiver)


@pytest.mark.slow
@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)
def test_two_servers_deliver_a_thousand_events_none_twice(
    servers: Servers, receiver: Receiver
) -> None:
    servers.env.update(FAST_DELIVERY)
    servers.env["REVENIPE_WEBHOOK_LEASE_SECONDS"] = "60"
    first = servers.start()
    second = servers.start(reuse=first)
    secret = _endpoint(first, receiver.url)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: _track((first, second)[i % 2], f"many-{i}", 100, f"m{i}"), range(500)
            )
        )
    assert all(r["success"] for r in results)
    wait_for(lambda: len(receiver.received) >= 1000, 120, "1,000 events delivered")
    time.sleep(1.5)
    attempts = receiver.attempts_per_id()
    assert len(attempts) == 1000
    twice = [i for i, n in attempts.items() if n > 1]
    assert not twice, f"{len(twice)} events delivered more than once"
    assert len(_delivered(receiver, secret)) == 1000
