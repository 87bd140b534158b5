"""Live apps taking app store purchases through RevenueCat's webhook, over HTTP
in-process, on SQLite and PostgreSQL.

`rc_world` builds two live apps, A and B, each with the catalog below (store product
ids) and its own webhook authorization, set through the server API. A has alice and
bob, B has carol. `Store` writes RevenueCat events shaped like RevenueCat's documented
samples (our own values). `revenipe verify` runs after every test here.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import revenipe
from revenipe.storage import customers as customer_store
from revenipe.storage import sources as source_store

from ..conftest import Tenant, TestClient, _add_customer, ok
from support import DEMO_CATALOG, Clock, assert_verified

RC_CATALOG = (
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
  - id: pro
    name: Pro
    type: subscription
    recurring_interval: month
    price: 1000
    app_store_product_id: com.example.pro.monthly
    play_store_product_id: pro_monthly
    grants:
      - {entitlement: monthly_credits, amount: 1000, reset: period, rollover: {max: 500}}
      - {entitlement: export_hd}
  - id: basic
    name: Basic
    type: subscription
    recurring_interval: month
    price: 500
    app_store_product_id: com.example.basic.monthly
    play_store_product_id: basic_monthly
    grants:
      - {entitlement: monthly_credits, amount: 300, reset: period}
  - id: pro_yearly
    name: Pro yearly
    type: subscription
    recurring_interval: year
    price: 10000
    app_store_product_id: com.example.pro.yearly
    grants:
      - {entitlement: monthly_credits, amount: 1000, reset: month}
  - id: pack_100
    name: 100 credits
    type: one_time
    price: 900
    app_store_product_id: com.example.credits100
    play_store_product_id: credits_100
    grants:
      - {entitlement: purchased_credits, amount: 100}
  - id: pack_50
    name: 50 credits
    type: one_time
    price: 500
    app_store_product_id: com.example.credits50
    grants:
      - {entitlement: purchased_credits, amount: 50, expires_after: P30D}
"""
)
PRO = "com.example.pro.monthly"
BASIC = "com.example.basic.monthly"
PACK_100 = "com.example.credits100"
PACK_50 = "com.example.credits50"


def ms(at: str) -> int:
    """RevenueCat's milliseconds for an ISO instant (UTC)."""
    moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass
class Store:
    """Writes RevenueCat's events (`{"api_version": "1.0", "event": {...}}`)."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def event(
        self,
        type_: str,
        at: str,
        *,
        user: str = "bob",
        product: str | None = PRO,
        purchased: str | None = None,
        expires: str | None = None,
        transaction: str | None = None,
        original_transaction: str | None = None,
        store: str = "APP_STORE",
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()).upper(),
            "type": type_,
            "event_timestamp_ms": ms(at),
            "app_id": "app1a2b3c4d5e",
            "app_user_id": user,
            "original_app_user_id": user,
            "aliases": [user],
            "environment": "PRODUCTION",
            "store": store,
            "entitlement_ids": ["pro"],
            "period_type": "NORMAL",
            "country_code": "US",
            "currency": "USD",
            "price": 9.99,
            "is_family_share": False,
        }
        if product is not None:
            body["product_id"] = product
        if purchased is not None:
            body["purchased_at_ms"] = ms(purchased)
        if expires is not None:
            body["expiration_at_ms"] = ms(expires)
        if transaction is not None:
            body["transaction_id"] = transaction
        body["original_transaction_id"] = original_transaction or transaction
        body.update(extra)
        event = {"api_version": "1.0", "event": body}
        self.events.append(event)
        return event


@dataclass
class RcWorld:
    backend: revenipe.Backend
    http: TestClient
    clock: Clock
    a: Tenant
    b: Tenant
    authorizations: dict[str, str]
    """By app id."""

    def tenant(self, name: str) -> Tenant:
        """Another live app with RevenueCat configured (and the same catalog)."""
        tenant, authorization = _live_tenant(self.backend, self.http, name)
        self.authorizations[tenant.app_id] = authorization
        return tenant

    def deliver(
        self,
        event: dict[str, Any],
        tenant: Tenant | None = None,
        *,
        authorization: str | None = None,
        payload: bytes | None = None,
    ) -> httpx.Response:
        """POST an event to the tenant's webhook endpoint, as RevenueCat sends it."""
        tenant = tenant or self.a
        headers = {
            "Authorization": authorization or self.authorizations[tenant.app_id],
            "Content-Type": "application/json",
        }
        body = payload if payload is not None else json.dumps(event).encode()
        return self.http.post(
            f"/v1/webhooks/revenuecat/{tenant.app_id}", content=body, headers=headers
        )

    def applied(self, event: dict[str, Any], tenant: Tenant | None = None) -> str:
        """Deliver and return the outcome (the answer must be 200)."""
        answer = self.deliver(event, tenant)
        assert answer.status_code == 200, (event["event"]["type"], answer.text)
        body = answer.json()
        assert body["received"] is True and body["event_id"] == event["event"]["id"]
        return str(body["outcome"])

    def at(self, moment: str) -> None:
        """Move the server's clock to `moment` (forward only)."""
        target = datetime.fromisoformat(moment).replace(tzinfo=UTC)
        assert target >= self.clock.now
        self.clock.now = target

    def state(self, name: str = "alice", tenant: Tenant | None = None) -> dict[str, Any]:
        tenant = tenant or self.a
        return dict(ok(self.http.get(f"/v1/customers/{name}", headers=tenant.api())))

    def credits(self, name: str = "alice", tenant: Tenant | None = None) -> int:
        (key,) = (k for k in self.state(name, tenant)["usage_keys"] if k["key_id"] == "credits")
        return int(key["remaining"])

    def rows(
        self, name: str = "alice", tenant: Tenant | None = None
    ) -> list[source_store.SourceRow]:
        """The customer's RevenueCat access sources as stored (ended ones too)."""
        tenant = tenant or self.a
        with self.backend.database.read() as conn:
            customer = customer_store.find_customer(conn, tenant.app_id, external_id=name)
            if customer is None:
                return []
            rows = source_store.list_sources(conn, customer.id)
        return [r for r in rows if r.provider == "revenuecat"]

    def track(self, name: str, tenant: Tenant, entitlement_id: str, value: int) -> dict[str, Any]:
        answer = self.http.post(
            f"/v1/customers/{name}/track",
            json={"id": entitlement_id, "value": value},
            headers=tenant.api(),
        )
        return dict(ok(answer))


def _live_tenant(backend: revenipe.Backend, http: TestClient, name: str) -> tuple[Tenant, str]:
    created = backend.create_app(name, revenipe.load_catalog(RC_CATALOG))
    tenant = Tenant(created.app.id, created.secret_key, created.app.token_signing_secret)
    authorization = f"Bearer {secrets.token_urlsafe(24)}"
    ok(
        http.put(
            "/v1/providers/revenuecat",
            json={"authorization": authorization},
            headers=tenant.api(),
        )
    )
    return tenant, authorization


@pytest.fixture(autouse=True)
def _verified_after_each_test(backend: revenipe.Backend) -> Iterator[None]:
    """`revenipe verify` (the ledger invariants) passes after every test here."""
    yield
    assert_verified(backend)


@pytest.fixture
def rc_world(backend: revenipe.Backend, http: TestClient, clock: Clock) -> RcWorld:
    a, authorization_a = _live_tenant(backend, http, "live app A")
    b, authorization_b = _live_tenant(backend, http, "live app B")
    _add_customer(http, a, "alice")
    _add_customer(http, a, "bob")
    _add_customer(http, b, "carol")
    return RcWorld(
        backend, http, clock, a, b, {a.app_id: authorization_a, b.app_id: authorization_b}
    )
