"""Clients that keep tracking through crashes and faults, and the ledger check after them.

A `Tracker` sends one logical track (one idempotency key) and retries it, with the same
key and body, until it learns the outcome: any answer but a 5xx. A connection refused or
reset, a time-out or a 5xx leaves the outcome unknown (the server may have committed
before it died), so the retry is what tells. `Load` runs such trackers on many threads
over two surfaces (the client protocol with a customer token, the server API with the
secret key), now and then re-sends a key it already has an answer for, and keeps every
outcome. `assert_ledger_matches` then reads the database: every key answered
`success: true` is one usage event that consumed exactly its value, in ledger entries;
nothing else was charged; balances are what the grants minus the answers say.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from e2e.harness import TLS, Server, mint_token
from revenipe.storage.database import normalize_url
from revenipe.storage.schema import grants, ledger_entries, usage_events

ENTITLEMENT = "purchased_credits"  # the e2e catalog's default product grants none of it
USAGE_KEY = "credits"
TRACKED_IDS = (ENTITLEMENT, USAGE_KEY)
TRANSPORT_ERRORS = (httpx.TransportError,)
# Load tests drive hundreds of client-protocol requests a second from 127.0.0.1: exactly
# the flood the per-address and per-customer limits refuse. They test other things.
NO_FLOOD_LIMITS = {
    "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "0",
    "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_CUSTOMER": "0",
}


@dataclass
class Account:
    """A customer the load draws on: external and internal id, a token, its balance."""

    external_id: str
    client_id: str
    token: str
    granted: int


def open_accounts(server: Server, count: int, balance: int, prefix: str) -> list[Account]:
    """`count` customers, each granted `balance` of ENTITLEMENT, each with a token."""
    accounts = []
    with server.api() as api:
        for index in range(count):
            external_id = f"{prefix}-{index}"
            granted = api.post(
                f"/v1/customers/{external_id}/grants",
                json={"entitlement_id": ENTITLEMENT, "amount": balance},
            )
            assert granted.status_code == 201, granted.text
            minted = mint_token(server, external_id, ttl_seconds=7 * 24 * 3600)
            accounts.append(Account(external_id, minted["client_id"], minted["token"], balance))
    return accounts


@dataclass
class Outcome:
    """What one logical track learned, after however many attempts."""

    key: str
    account: Account
    tracked_id: str
    value: int
    surface: str
    status: int | None = None
    body: dict[str, Any] | None = None
    attempts: int = 0
    first_sent: float = 0.0
    last_sent: float = 0.0
    unanswered: list[str] = field(default_factory=list)
    """Why each attempt before the answer told nothing (status or exception name)."""

    @property
    def acknowledged(self) -> bool:
        return self.status == 200 and self.body is not None and self.body.get("success") is True


class Tracker:
    """One thread's HTTP clients for both surfaces, at a base URL that stays the same
    across restarts (the server comes back on its port)."""

    def __init__(self, server: Server, timeout_s: float = 10.0) -> None:
        self.server = server
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.protocol = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": server.app_id},
            timeout=timeout_s,
            limits=limits,
            verify=TLS,
        )
        self.api = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.secret_key}"},
            timeout=timeout_s,
            limits=limits,
            verify=TLS,
        )

    def close(self) -> None:
        self.protocol.close()
        self.api.close()

    def send(self, outcome: Outcome) -> httpx.Response:
        headers = {"Idempotency-Key": outcome.key}
        account = outcome.account
        if outcome.surface == "protocol":
            headers["X-Revenipe-Customer-Token"] = account.token
            body = {
                "access_source_id": None,
                "entitlement_id": outcome.tracked_id,
                "client_id": account.client_id,
                "value": outcome.value,
            }
            return self.protocol.post("/v1/customer/track", json=body, headers=headers)
        return self.api.post(
            f"/v1/customers/{account.external_id}/track",
            json={"id": outcome.tracked_id, "value": outcome.value},
            headers=headers,
        )

    def settle(self, outcome: Outcome, deadline_s: float) -> Outcome:
        """Send until answered (not a 5xx, not a transport error), or until the deadline."""
        give_up = time.monotonic() + deadline_s
        pause = 0.02
        outcome.first_sent = time.monotonic()
        while time.monotonic() < give_up:
            outcome.attempts += 1
            outcome.last_sent = time.monotonic()
            try:
                response = self.send(outcome)
            except TRANSPORT_ERRORS as exc:
                outcome.unanswered.append(type(exc).__name__)
            else:
                if response.status_code < 500:
                    outcome.status = response.status_code
                    outcome.body = response.json()
                    return outcome
                outcome.unanswered.append(_error_label(response))
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        return outcome


def _error_label(response: httpx.Response) -> str:
    try:
        code = response.json().get("code")
    except ValueError:
        code = "not-json"
    return f"{response.status_code} {code}"


@dataclass
class Load:
    """Threads tracking on `accounts` until `stop()`; every outcome is kept."""

    server: Server
    accounts: list[Account]
    threads: int = 8
    deadline_s: float = 60.0
    max_value: int = 3
    replay_share: float = 0.05
    seed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    replay_mismatches: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        """Stop starting tracks; wait until every started one is answered (or gave up)."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.deadline_s + 30)
        assert not any(w.is_alive() for w in self._workers), "a load thread is stuck"

    def acknowledged_count(self) -> int:
        with self._lock:
            return sum(o.acknowledged for o in self.outcomes)

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        tracker = Tracker(self.server)
        mine: list[Outcome] = []
        try:
            while not self._stop.is_set():
                if mine and rng.random() < self.replay_share:
                    self._replay(tracker, rng.choice(mine))
                    continue
                outcome = Outcome(
                    key=f"rel-{uuid.uuid4().hex}",
                    account=rng.choice(self.accounts),
                    tracked_id=rng.choice(TRACKED_IDS),
                    value=rng.randint(1, self.max_value),
                    surface=rng.choice(("protocol", "api")),
                )
                tracker.settle(outcome, self.deadline_s)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.status is not None:
                    mine.append(outcome)
        finally:
            tracker.close()

    def _replay(self, tracker: Tracker, first: Outcome) -> None:
        """A late duplicate of an answered track: the same answer, nothing charged."""
        again = Outcome(first.key, first.account, first.tracked_id, first.value, first.surface)
        tracker.settle(again, self.deadline_s)
        if again.status is None:
            return  # the load is ending or the server is down for long: no verdict
        if (again.status, again.body) != (first.status, first.body):
            with self._lock:
                self.replay_mismatches.append(
                    f"{first.key}: first {first.status} {first.body}, "
                    f"again {again.status} {again.body}"
                )


@dataclass
class LedgerFigures:
    tracks: int
    acknowledged: int
    refused: int
    retried: int
    attempts: int
    unanswered_by_kind: Counter[str]


def assert_ledger_matches(database_url: str, load: Load) -> LedgerFigures:
    """Every answered track is in the database exactly as answered; nothing else is."""
    outcomes = load.outcomes
    unanswered = [o for o in outcomes if o.status is None]
    assert not unanswered, (
        f"{len(unanswered)} track(s) never got an answer, e.g. {unanswered[0].unanswered[-5:]}"
        f" (sent from {unanswered[0].first_sent:.1f} to {unanswered[0].last_sent:.1f}, "
        f"monotonic)"
    )
    not_ok = [o for o in outcomes if o.status != 200]
    assert not not_ok, f"{len(not_ok)} answer(s) not 200, e.g. {not_ok[0].status} {not_ok[0].body}"
    assert not load.replay_mismatches, load.replay_mismatches[:3]
    by_key = {o.key: o for o in outcomes}
    assert len(by_key) == len(outcomes)
    customers = {a.client_id for a in load.accounts}

    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            events = [
                row for row in conn.execute(select(usage_events)) if row.customer_id in customers
            ]
            consumed_by_event: Counter[str] = Counter()
            consumed_by_customer: Counter[str] = Counter()
            ledger_by_customer: Counter[str] = Counter()
            for entry in conn.execute(select(ledger_entries)):
                ledger_by_customer[entry.customer_id] += entry.amount
                if entry.kind == "consumed" and entry.usage_event_id is not None:
                    consumed_by_event[entry.usage_event_id] -= entry.amount
                    consumed_by_customer[entry.customer_id] -= entry.amount
            balances: Counter[str] = Counter()
            for grant in conn.execute(select(grants)):
                balances[grant.customer_id] += grant.balance
    finally:
        engine.dispose()

    keys_in_database = Counter(e.idempotency_key for e in events)
    twice = [k for k, n in keys_in_database.items() if n > 1]
    assert not twice, f"{len(twice)} key(s) applied more than once, e.g. {twice[:3]}"
    strangers = [e.idempotency_key for e in events if e.idempotency_key not in by_key]
    assert not strangers, f"usage events nobody sent: {strangers[:3]}"
    for event in events:
        outcome = by_key[event.idempotency_key]
        body = outcome.body
        assert body is not None
        answered = (body["success"], body["consumed"], body["remaining"], body["error"])
        stored = (event.success, event.consumed, event.remaining, event.error)
        assert answered == stored, f"{event.idempotency_key}: answered {answered}, stored {stored}"
        assert consumed_by_event[event.id] == event.consumed, (
            f"usage event {event.id}: consumed {event.consumed}, entries "
            f"{consumed_by_event[event.id]}"
        )
    missing = [o.key for o in outcomes if o.acknowledged and o.key not in keys_in_database]
    assert not missing, f"{len(missing)} acknowledged track(s) not in the ledger: {missing[:3]}"
    # Refusals were written too (they are usage events); every answer is one event.
    assert len(events) == len(outcomes), (len(events), len(outcomes))
    spent: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.acknowledged:
            spent[outcome.account.client_id] += outcome.value
    for account in load.accounts:
        customer = account.client_id
        assert consumed_by_customer[customer] == spent[customer], (
            f"{account.external_id}: the ledger consumed {consumed_by_customer[customer]}, "
            f"the answers acknowledged {spent[customer]}"
        )
        assert balances[customer] == ledger_by_customer[customer], (
            f"{account.external_id}: balances {balances[customer]}, ledger "
            f"{ledger_by_customer[customer]}"
        )
    unanswered_kinds: Counter[str] = Counter()
    for outcome in outcomes:
        unanswered_kinds.update(outcome.unanswered)
    return LedgerFigures(
        tracks=len(outcomes),
        acknowledged=sum(o.acknowledged for o in outcomes),
        refused=sum(not o.acknowledged for o in outcomes),
        retried=sum(o.attempts > 1 for o in outcomes),
        attempts=sum(o.attempts for o in outcomes),
        unanswered_by_kind=unanswered_kinds,
    )
