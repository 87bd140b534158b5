"""The HTTP server, in-process, over the `backend` fixture (SQLite and PostgreSQL).

`world` builds two apps, A and B, both with the demo catalog, through the server API
itself: in A, alice (the free tier, plus a `welcome` bonus and a `pack_50`) and bob (the
free tier, plus `welcome`); in B, carol (the free tier, plus `welcome`). Every customer
gets a customer token minted with `POST /v1/customers/{external_id}/tokens`.

The server shares the backend's `ServiceContext`, so the `clock` fixture is the
server's clock too (tokens expire when the test advances it).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import revenipe
from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings
from revenipe.storage.schema import (
    access_sources,
    customers,
    grants,
    ledger_entries,
    purchase_attempts,
    reversals,
    secret_keys,
    usage_events,
)

from support import DEMO_CATALOG, assert_verified

with warnings.catch_warnings():
    # Starlette warns that its test client will move to httpx2; the API is the same.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN_HEADER = "X-Revenipe-Customer-Token"
SERVER_CATALOG = (
    DEMO_CATALOG
    + """\
  - id: basic
    name: Basic
    type: subscription
    recurring_interval: month
    price: 500
    grants:
      - entitlement: monthly_credits
        amount: 300
        reset: period
"""
)
ANONYMOUS_LOGINS_PER_MINUTE = 5


@dataclass
class Customer:
    external_id: str
    client_id: str
    """Revenipe's internal id (what the client protocol calls `client_id`)."""
    token: str
    sources: dict[str, str] = field(default_factory=dict)
    """Access source ids by product id."""


@dataclass
class Tenant:
    """One app, seen from outside: its public id, its secret key and its customers."""

    app_id: str
    secret_key: str
    signing_secret: str
    customers: dict[str, Customer] = field(default_factory=dict)

    def api(self) -> dict[str, str]:
        """Headers of a server API request (secret key)."""
        return {"Authorization": f"Bearer {self.secret_key}"}

    def client(self, token: str | None = None) -> dict[str, str]:
        """Headers of a client protocol request (public app id, and a token if given)."""
        headers = {"Authorization": self.app_id}
        if token is not None:
            headers[TOKEN_HEADER] = token
        return headers

    def as_customer(self, external_id: str) -> dict[str, str]:
        """Client headers carrying `external_id`'s own token."""
        return self.client(self.customers[external_id].token)


@dataclass
class World:
    backend: revenipe.Backend
    http: TestClient
    a: Tenant
    b: Tenant

    @property
    def tenants(self) -> tuple[Tenant, Tenant]:
        return (self.a, self.b)


def assert_error(
    response: httpx.Response, status: int | tuple[int, ...], code: str | None = None
) -> dict[str, Any]:
    """An error answer: the status, and a JSON body with a non-empty `code` and `message`."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def customer_outcome(
    backend: revenipe.Backend, http: TestClient, tenant: Tenant, name: str
) -> dict[str, Any]:
    """What a customer holds and every ledger entry per grant, without ids or recording
    times: two ways of reaching the same story (events in order, or shuffled) compare
    equal on it. Grants are keyed by (product, provider, entitlement, start)."""
    customer_id = tenant.customers[name].client_id
    with backend.database.read() as conn:
        sources = {
            r.id: r
            for r in conn.execute(
                select(access_sources).where(access_sources.c.customer_id == customer_id)
            )
        }
        grant_rows = list(conn.execute(select(grants).where(grants.c.customer_id == customer_id)))
        entries = list(
            conn.execute(
                select(ledger_entries)
                .where(ledger_entries.c.customer_id == customer_id)
                .order_by(ledger_entries.c.id)
            )
        )
    grant_key = {
        g.id: (
            sources[g.source_id].product_id,
            sources[g.source_id].provider,
            g.entitlement_id,
            g.created_at,
        )
        for g in grant_rows
    }
    per_grant: dict[Any, list[Any]] = defaultdict(list)
    for e in entries:
        per_grant[grant_key[e.grant_id]].append((e.kind, e.amount, e.balance_after, e.effective_at))
    state = dict(ok(http.get(f"/v1/customers/{name}", headers=tenant.api())))
    for key in ("subscriptions", "add_ons", "base_plans"):
        for item in state[key]:
            item.pop("access_source_id", None)
            item.pop("source_id", None)
            if item.get("pending_change"):
                item["pending_change"].pop("change_id")
    return {
        "sources": sorted(
            (
                s.product_id,
                s.provider,
                s.kind,
                s.status,
                s.started_at,
                s.ended_at,
                s.current_period_start,
                s.current_period_end,
                s.cancel_at_period_end,
                s.payment_method_attached,
                s.trial_end,
                s.billing_anchor,
            )
            for s in sources.values()
        ),
        "grants": sorted((k, g.status, g.balance) for g in grant_rows for k in [grant_key[g.id]]),
        "ledger": dict(per_grant),
        "balances": (
            state["usage_keys"],
            sorted((e["entitlement_id"], e["remaining"]) for e in state["entitlements"]),
        ),
        "subscriptions": state["subscriptions"],
        "add_ons": state["add_ons"],
    }


def _all_pages(http: TestClient, tenant: Tenant, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = ok(http.get(path, params=params, headers=tenant.api()))
        items.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def snapshot(world: World) -> dict[str, Any]:
    """What both apps hold, as the server API shows it: the ledger, the usage events, the
    customers and each customer's balances."""
    seen: dict[str, Any] = {}
    for name, tenant in (("A", world.a), ("B", world.b)):
        seen[f"{name}/ledger"] = _all_pages(world.http, tenant, "/v1/ledger", "entries")
        seen[f"{name}/usage_events"] = _all_pages(
            world.http, tenant, "/v1/usage_events", "usage_events"
        )
        seen[f"{name}/customers"] = _all_pages(world.http, tenant, "/v1/customers", "customers")
        for customer in tenant.customers.values():
            state = ok(
                world.http.get(f"/v1/customers/{customer.external_id}", headers=tenant.api())
            )
            seen[f"{name}/{customer.external_id}"] = {
                "entitlements": sorted(
                    (e["entitlement_id"], e["access_source_id"], e["remaining"])
                    for e in state["entitlements"]
                ),
                "usage_keys": state["usage_keys"],
            }
    return seen


def assert_unchanged(
    world: World, before: dict[str, Any], *, ignore: set[str] | frozenset[str] = frozenset()
) -> None:
    """Nothing changed since `before` (a `snapshot`), but the `ignore`d keys; the ledger
    invariants hold."""
    after = snapshot(world)
    assert after.keys() == before.keys()
    for key in before.keys() - ignore:
        assert after[key] == before[key], key
    assert_verified(world.backend)


def fingerprint(world: World) -> dict[str, Any]:
    """A cheap check that nothing was written: row counts per app and every grant's
    balance, straight from the database (one read transaction)."""
    app_ids = [t.app_id for t in world.tenants]
    seen: dict[str, Any] = {}
    with world.backend.database.read() as conn:
        for table in (
            customers,
            access_sources,
            grants,
            ledger_entries,
            usage_events,
            reversals,
            secret_keys,
            purchase_attempts,
        ):
            query = (
                select(table.c.app_id, func.count())
                .where(table.c.app_id.in_(app_ids))
                .group_by(table.c.app_id)
            )
            seen[table.name] = dict(tuple(row) for row in conn.execute(query))
        balances = select(grants.c.id, grants.c.balance, grants.c.status).where(
            grants.c.app_id.in_(app_ids)
        )
        seen["balances"] = sorted(tuple(row) for row in conn.execute(balances))
    return seen


@pytest.fixture
def server_settings(database_url: str) -> ServerSettings:
    return ServerSettings(
        database_url=database_url,
        anonymous_logins_per_minute_per_address=ANONYMOUS_LOGINS_PER_MINUTE,
    )


@pytest.fixture
def http(backend: revenipe.Backend, server_settings: ServerSettings) -> Iterator[TestClient]:
    asgi = create_app(server_settings, context=backend.context)
    with TestClient(asgi, raise_server_exceptions=False) as client:
        yield client


def _tenant(backend: revenipe.Backend, http: TestClient, name: str) -> Tenant:
    # Sandbox apps: purchases go through the built-in sandbox, so they can be tested here.
    created = backend.create_app(name, revenipe.load_catalog(SERVER_CATALOG), sandbox=True)
    return Tenant(created.app.id, created.secret_key, created.app.token_signing_secret)


def _add_customer(http: TestClient, tenant: Tenant, external_id: str, *products: str) -> None:
    minted = ok(http.post(f"/v1/customers/{external_id}/tokens", headers=tenant.api()), 201)
    customer = Customer(external_id, minted["client_id"], minted["token"])
    state = ok(http.get(f"/v1/customers/{external_id}", headers=tenant.api()))
    for subscription in state["subscriptions"]:
        customer.sources[subscription["product_id"]] = subscription["access_source_id"]
    for product_id in products:
        granted = ok(
            http.post(
                f"/v1/customers/{external_id}/grants",
                json={"product_id": product_id},
                headers=tenant.api(),
            ),
            201,
        )
        assert granted["client_id"] == customer.client_id
        customer.sources[product_id] = granted["access_source_id"]
    tenant.customers[external_id] = customer


def subscribe(http: TestClient, tenant: Tenant, external_id: str, product_id: str) -> str:
    """Buy `product_id` for a customer through the sandbox's hosted checkout, as a
    browser would (request the page, submit its pay form): the new access source's id."""
    customer = tenant.customers[external_id]
    started = ok(
        http.post(
            "/v1/customer/purchase/start_purchase",
            json={
                "customer_id": customer.client_id,
                "product_id": product_id,
                "purchase_method": "hosted_checkout",
            },
            headers=tenant.as_customer(external_id),
        )
    )
    url = started["checkout"]["checkout_url"]
    page = http.get(url)
    assert page.status_code == 200 and 'id="pay"' in page.text, page.text
    paid = http.post(f"{url}/pay", follow_redirects=False)
    assert paid.status_code == 200, paid.text
    state = ok(http.get(f"/v1/customers/{external_id}", headers=tenant.api()))
    (source_id,) = (
        s["access_source_id"]
        for s in state["subscriptions"] + state["add_ons"]
        if s["product_id"] == product_id and s["provider"] == "sandbox"
    )
    customer.sources[product_id] = source_id
    return str(source_id)


@pytest.fixture
def world(backend: revenipe.Backend, http: TestClient) -> World:
    a = _tenant(backend, http, "app A")
    b = _tenant(backend, http, "app B")
    _add_customer(http, a, "alice", "welcome", "pack_50")
    _add_customer(http, a, "bob", "welcome")
    _add_customer(http, b, "carol", "welcome")
    for tenant in (a, b):
        for customer in tenant.customers.values():
            assert set(customer.sources) >= {"free", "welcome"}, customer
    return World(backend, http, a, b)
