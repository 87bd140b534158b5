"""Live apps selling through Stripe, over HTTP in-process, on SQLite and PostgreSQL.

`stripe_world` builds two live apps, A and B, each configured with its own Stripe
account (secret key, webhook secret) through the server API, and points the backend's
Stripe clients at a `FakeStripe` (the library's HTTP seam) that plays both accounts.
A has alice and bob, B has carol. `revenipe verify` runs after every test here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import revenipe
from revenipe.providers.stripe_gateway import StripeClients
from revenipe.storage import sources as source_store

from ..conftest import Tenant, TestClient, _add_customer, ok
from ..test_purchases_sandbox import START, TRACK
from .fake_stripe import FakeStripe, sign
from support import DEMO_CATALOG, Clock, assert_verified

STRIPE_CATALOG = (
    DEMO_CATALOG.split("products:")[0]
    + """products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - {entitlement: monthly_credits, amount: 100, reset: period, rollover: {max: 0}}
      - {entitlement: export_hd}
  - id: pro
    name: Pro
    type: subscription
    recurring_interval: month
    price: 1000
    currency: usd
    stripe_price_id: price_pro
    grants:
      - {entitlement: monthly_credits, amount: 1000, reset: period, rollover: {max: 500}}
  - id: basic
    name: Basic
    type: subscription
    recurring_interval: month
    price: 500
    currency: usd
    stripe_price_id: price_basic
    grants:
      - {entitlement: monthly_credits, amount: 300, reset: period}
  - id: trial_plan
    name: Trial plan
    type: subscription
    recurring_interval: month
    price: 800
    currency: usd
    trial: P7D
    stripe_price_id: price_trial
    grants:
      - {entitlement: monthly_credits, amount: 200, reset: period}
  - id: studio
    name: Studio (hosted checkout only)
    type: subscription
    recurring_interval: month
    price: 700
    currency: eur
    grants:
      - {entitlement: monthly_credits, amount: 700, reset: period}
  - id: pack_50
    name: 50 credits
    type: one_time
    price: 500
    currency: usd
    grants:
      - {entitlement: purchased_credits, amount: 50, expires_after: P30D}
  - id: pack_100
    name: 100 credits
    type: one_time
    stripe_price_id: price_pack100
    grants:
      - {entitlement: purchased_credits, amount: 100}
  - id: welcome
    name: Welcome bonus
    type: one_time
    grants:
      - {entitlement: bonus_credits, amount: 10}
"""
)
PRICES = (
    ("price_pro", 1000, "month"),
    ("price_basic", 500, "month"),
    ("price_trial", 800, "month"),
    ("price_pack100", 900, None),
)


@dataclass
class Account:
    """One app's Stripe account, as configured."""

    secret_key: str
    webhook_secret: str


@dataclass
class StripeWorld:
    backend: revenipe.Backend
    http: TestClient
    fake: FakeStripe
    clock: Clock
    a: Tenant
    b: Tenant
    accounts: dict[str, Account]
    """By app id."""

    def account(self, tenant: Tenant) -> Account:
        return self.accounts[tenant.app_id]

    # --- Stripe -> us ----------------------------------------------------------------

    def deliver(
        self,
        event: dict[str, Any],
        tenant: Tenant | None = None,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        payload: bytes | None = None,
    ) -> httpx.Response:
        """POST an event to the tenant's webhook endpoint, signed as Stripe signs it."""
        tenant = tenant or self.a
        body = payload if payload is not None else json.dumps(event).encode()
        header = signature or sign(body, secret or self.account(tenant).webhook_secret, timestamp)
        return self.http.post(
            f"/v1/webhooks/stripe/{tenant.app_id}",
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    def deliver_all(self, events: list[dict[str, Any]], tenant: Tenant | None = None) -> None:
        for event in events:
            answer = self.deliver(event, tenant)
            assert answer.status_code == 200, (event["type"], answer.text)

    def advance(self, **delta: float) -> None:
        """Move time on (the server's and Stripe's), and give every customer a fresh
        token (tokens run on the server's time and expire)."""
        self.clock.advance(**delta)
        for tenant in (self.a, self.b):
            for customer in tenant.customers.values():
                minted = ok(
                    self.http.post(
                        f"/v1/customers/{customer.external_id}/tokens", headers=tenant.api()
                    ),
                    201,
                )
                customer.token = minted["token"]

    # --- the client protocol -----------------------------------------------------------

    def start(
        self, name: str = "alice", tenant: Tenant | None = None, **body: Any
    ) -> httpx.Response:
        tenant = tenant or self.a
        customer = tenant.customers[name]
        return self.http.post(
            START,
            json={"customer_id": customer.client_id, **body},
            headers=tenant.as_customer(name),
        )

    def call(
        self, path: str, name: str = "alice", tenant: Tenant | None = None, **body: Any
    ) -> httpx.Response:
        tenant = tenant or self.a
        customer = tenant.customers[name]
        return self.http.post(
            path, json={"client_id": customer.client_id, **body}, headers=tenant.as_customer(name)
        )

    def state(self, name: str = "alice", tenant: Tenant | None = None) -> dict[str, Any]:
        tenant = tenant or self.a
        return dict(ok(self.http.get(f"/v1/customers/{name}", headers=tenant.api())))

    def credits(self, name: str = "alice", tenant: Tenant | None = None) -> int:
        keys = self.state(name, tenant)["usage_keys"]
        (key,) = (k for k in keys if k["key_id"] == "credits")
        return int(key["remaining"])

    def stripe_sources(
        self, name: str = "alice", tenant: Tenant | None = None
    ) -> list[dict[str, Any]]:
        state = self.state(name, tenant)
        return [s for s in state["subscriptions"] + state["add_ons"] if s["provider"] == "stripe"]

    def rows(
        self, name: str = "alice", tenant: Tenant | None = None
    ) -> list[source_store.SourceRow]:
        """The customer's Stripe access sources as stored (packs included, ended ones too)."""
        tenant = tenant or self.a
        with self.backend.database.read() as conn:
            rows = source_store.list_sources(conn, tenant.customers[name].client_id)
        return [r for r in rows if r.provider == "stripe"]

    def subscription(self, source_id: str, name: str = "alice") -> dict[str, Any] | None:
        found = [s for s in self.state(name)["subscriptions"] if s["access_source_id"] == source_id]
        return found[0] if found else None

    def track(self, value: int, name: str = "alice", **extra: Any) -> dict[str, Any]:
        body = {"entitlement_id": "credits", "value": value, "access_source_id": None, **extra}
        return dict(ok(self.call(TRACK, name, **body)))


def _live_tenant(
    backend: revenipe.Backend, http: TestClient, fake: FakeStripe, name: str, letter: str
) -> tuple[Tenant, Account]:
    created = backend.create_app(name, revenipe.load_catalog(STRIPE_CATALOG))
    tenant = Tenant(created.app.id, created.secret_key, created.app.token_signing_secret)
    account = Account(f"sk_test_{letter * 24}", f"whsec_{letter * 32}")
    ok(
        http.put(
            "/v1/providers/stripe",
            json={"secret_key": account.secret_key, "webhook_secret": account.webhook_secret},
            headers=tenant.api(),
        )
    )
    for price_id, amount, interval in PRICES:
        fake.add_price(account.secret_key, price_id, amount, interval)
    return tenant, account


@pytest.fixture(autouse=True)
def _verified_after_each_test(backend: revenipe.Backend) -> Iterator[None]:
    """`revenipe verify` (the ledger invariants) passes after every test here."""
    yield
    assert_verified(backend)


@pytest.fixture
def fake_stripe(backend: revenipe.Backend, clock: Clock) -> FakeStripe:
    fake = FakeStripe(clock)
    backend.context.stripe = StripeClients(http_client=fake)
    return fake


@pytest.fixture
def stripe_world(
    backend: revenipe.Backend, http: TestClient, fake_stripe: FakeStripe, clock: Clock
) -> StripeWorld:
    a, account_a = _live_tenant(backend, http, fake_stripe, "live app A", "a")
    b, account_b = _live_tenant(backend, http, fake_stripe, "live app B", "b")
    _add_customer(http, a, "alice")
    _add_customer(http, a, "bob")
    _add_customer(http, b, "carol")
    return StripeWorld(
        backend,
        http,
        fake_stripe,
        clock,
        a,
        b,
        {a.app_id: account_a, b.app_id: account_b},
    )
