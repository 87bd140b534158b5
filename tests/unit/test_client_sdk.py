"""The client SDK (`Revenipe` and `RevenipeSync`) against a fake server.

Every test runs on both twins (the `sdk` fixture) to keep their behaviour identical. The
fake server is an `httpx.MockTransport` handler that records each request, so tests
assert the exact wire traffic: paths, headers, body field names and values.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from revenipe.client import (
    ApiError,
    AuthenticationError,
    Customer,
    CustomerEntitlement,
    InvalidArgumentError,
    NotConfiguredError,
    NotFoundError,
    NotLoggedInError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    Revenipe,
    RevenipeClientError,
    RevenipeConfig,
    RevenipeSync,
    TrackResult,
    TransportError,
)

BASE_URL = "https://revenipe.test/api/"
APP_ID = "app_public_123"
INTERNAL_ID = "cus_internal_1"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

SUBSCRIPTION = {
    "access_source_id": "src_plan",
    "product_id": "pro_monthly",
    "product_name": "Pro",
    "status": "active",
    "provider": "stripe",
    "is_trial": False,
    "renews_at": "2026-12-01T00:00:00Z",
    "expires_at": None,
    "will_cancel_at_period_end": False,
    "can_cancel": True,
    "pending_change": {
        "change_id": "chg_1",
        "type": "downgrade",
        "billing_mode": "period_end",
        "status": "pending",
        "from_product_id": "pro_monthly",
        "to_product_id": "basic_monthly",
        "effective_at": "2026-12-01T00:00:00+01:00",
    },
    "payment_method_attached": True,
}

CUSTOMER: dict[str, Any] = {
    "client_id": INTERNAL_ID,
    "entitlements": [
        {
            "entitlement_id": "monthly_credits",
            "access_source_id": "src_plan",
            "type": "metered",
            "remaining": 100,
            "expires_at": None,
        },
        {
            "entitlement_id": "monthly_credits",
            "access_source_id": "src_promo",
            "type": "metered",
            "remaining": 20,
            "expires_at": "2099-01-01T00:00:00Z",
        },
        {
            "entitlement_id": "export_hd",
            "access_source_id": "src_plan",
            "type": "boolean",
            "remaining": 0,
            "expires_at": None,
        },
        {
            "entitlement_id": "old_feature",
            "access_source_id": "src_old",
            "type": "boolean",
            "remaining": 0,
            "expires_at": "2020-01-01T00:00:00Z",
        },
    ],
    "usage_keys": [{"key_id": "credits", "name": "Credits", "remaining": 120}],
    "subscriptions": [SUBSCRIPTION],
    "add_ons": [
        {
            "access_source_id": "src_addon",
            "product_id": "extra_seats",
            "product_name": "Extra seats",
            "status": "active",
            "billing_type": "recurring",
            "expires_at": None,
            "renews_at": "2026-12-01T00:00:00Z",
            "can_cancel": False,
        }
    ],
    "base_plans": [
        {
            "source_id": "src_plan",
            "status": "active",
            "product_id": None,
            "product_name": None,
            "interval": "month",
            "period_end": "2026-12-01T00:00:00Z",
        }
    ],
}

PRODUCTS = {
    "products": [
        {
            "product_id": "pro_monthly",
            "name": "Pro",
            "description": None,
            "price": 999,
            "type": "subscription",
            "recurring_interval": "month",
            "app_store_product_id": None,
            "play_store_product_id": "pro.monthly",
            "entitlements": [
                {"entitlement_id": "monthly_credits", "name": "Credits", "description": None}
            ],
        }
    ]
}


def track_answer(**fields: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "success": True,
        "requested": 1,
        "consumed": 1,
        "remaining": 99,
        "entitlement_id": "monthly_credits",
        "access_source_id": "src_plan",
        "error": None,
    }
    answer.update(fields)
    return answer


Reply = httpx.Response | type[httpx.TransportError] | Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Plays the Revenipe server: scripted replies first, then sensible defaults."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.scripted: dict[tuple[str, str], list[Reply]] = defaultdict(list)
        self.customer = copy.deepcopy(CUSTOMER)

    def reply(self, method: str, path: str, *replies: Reply) -> None:
        """Queues replies for `method path` (path relative to the base URL)."""
        self.scripted[(method, "/api/" + path)].extend(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.scripted[(request.method, request.url.path)]
        if queue:
            reply = queue.pop(0)
            if isinstance(reply, httpx.Response):
                return reply
            if isinstance(reply, type):
                raise reply("simulated failure", request=request)
            return reply(request)
        return self.default(request)

    def default(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        if path == "v1/client/auth":
            return httpx.Response(200, json=self.customer)
        if path == "v1/customer/refresh_entitlements":
            lists = {k: v for k, v in self.customer.items() if k != "client_id"}
            return httpx.Response(200, json=lists)
        if path == "v1/customer/track":
            body = json.loads(request.content)
            return httpx.Response(200, json=track_answer(entitlement_id=body["entitlement_id"]))
        if path == "v1/customer/app/products":
            return httpx.Response(200, json=PRODUCTS)
        return httpx.Response(404, json={"message": f"no route {path}", "code": "not_found"})

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.url.path == "/api/" + path]

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix("/api/") for r in self.requests]


class Twin:
    """One of the twins, driven through one interface: `run` awaits what needs awaiting."""

    def __init__(self, kind: str, runner: asyncio.Runner) -> None:
        self.kind = kind
        self.server = FakeServer()
        self._runner = runner
        self.client: Any = None
        self.configure()

    def configure(self, **overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "app_id": APP_ID,
            "base_url": BASE_URL,
            "transport": httpx.MockTransport(self.server),
            "retry_backoff": 0,
        }
        settings.update(overrides)
        config = RevenipeConfig(**settings)
        self.client = Revenipe(config) if self.kind == "async" else RevenipeSync(config)
        return self.client

    def run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            return self._runner.run(_awaited(value))
        return value

    def login(self, external_id: str = "user-42") -> Customer:
        customer: Customer = self.run(self.client.login(external_id))
        return customer


async def _awaited(value: Any) -> Any:
    return await value


@pytest.fixture(params=["async", "sync"])
def sdk(request: pytest.FixtureRequest) -> Iterator[Twin]:
    with asyncio.Runner() as runner:
        twin = Twin(request.param, runner)
        yield twin
        close = getattr(twin.client, "aclose", None) or twin.client.close
        twin.run(close())


# -- transport and login ---------------------------------------------------------------


def test_login_sends_the_protocol_request_and_keeps_the_customer(sdk: Twin) -> None:
    sdk.configure(default_headers={"X-App-Version": "1.2.3"})

    customer = sdk.login("user-42")

    (request,) = sdk.server.requests
    assert request.method == "POST"
    assert request.url == "https://revenipe.test/api/v1/client/auth"
    assert request.headers["authorization"] == APP_ID  # bare: no "Bearer"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-app-version"] == "1.2.3"
    assert "x-revenipe-customer-token" not in request.headers
    assert json.loads(request.content) == {"client_id": "user-42"}
    assert request.extensions["timeout"] == {
        "connect": 15.0,
        "read": 15.0,
        "write": 15.0,
        "pool": 15.0,
    }

    assert customer.client_id == INTERNAL_ID
    assert sdk.client.client_id == INTERNAL_ID
    assert sdk.client.external_id == "user-42"
    assert sdk.client.is_logged_in
    assert sdk.client.customer == customer


def test_login_decodes_every_list_and_timestamp(sdk: Twin) -> None:
    customer = sdk.login()

    assert [(e.entitlement_id, e.access_source_id) for e in customer.entitlements] == [
        ("monthly_credits", "src_plan"),
        ("monthly_credits", "src_promo"),
        ("export_hd", "src_plan"),
        ("old_feature", "src_old"),
    ]
    assert customer.entitlements[1].expires_at == datetime(2099, 1, 1, tzinfo=UTC)
    (subscription,) = customer.subscriptions
    assert subscription.renews_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert subscription.pending_change is not None
    # An offset is converted to UTC, so every datetime the SDK hands out is UTC.
    assert subscription.pending_change.effective_at == datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert subscription.pending_change.effective_at.tzinfo is UTC
    assert customer.add_ons[0].billing_type == "recurring"
    assert customer.base_plans[0].product_id is None
    assert customer.usage_keys[0].remaining == 120


def test_absent_lists_mean_empty(sdk: Twin) -> None:
    sdk.server.reply("POST", "v1/client/auth", httpx.Response(200, json={"client_id": "c1"}))

    customer = sdk.login()

    assert customer == Customer(client_id="c1")
    assert customer.entitlements == ()


def test_anonym_login_sends_a_fresh_32_hex_identity(sdk: Twin) -> None:
    sdk.run(sdk.client.anonym_login())
    sdk.run(sdk.client.anonym_login())

    first, second = (body["client_id"] for body in sdk.server.bodies("v1/client/auth"))
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second
    assert sdk.client.external_id == second


def test_a_base_url_without_trailing_slash_still_keeps_its_path(sdk: Twin) -> None:
    sdk.configure(base_url="https://revenipe.test/api")

    sdk.login()

    assert sdk.server.requests[0].url == "https://revenipe.test/api/v1/client/auth"


# -- track -----------------------------------------------------------------------------


def test_track_sends_the_protocol_body_with_the_first_matching_source(sdk: Twin) -> None:
    sdk.login()

    result = sdk.run(sdk.client.track(id="monthly_credits", value=3))

    request = sdk.server.requests[-1]
    assert request.url.path == "/api/v1/customer/track"
    assert request.headers["authorization"] == APP_ID
    assert json.loads(request.content) == {
        "access_source_id": "src_plan",
        "entitlement_id": "monthly_credits",
        "client_id": INTERNAL_ID,
        "value": 3,
    }
    assert UUID4.match(request.headers["idempotency-key"])
    assert isinstance(result, TrackResult)
    assert result.success


def test_track_of_a_usage_key_or_unknown_id_sends_a_null_source(sdk: Twin) -> None:
    sdk.login()

    sdk.run(sdk.client.track(id="credits", value=1))
    sdk.run(sdk.client.track(id="nothing_like_it", value=1))

    bodies = sdk.server.bodies("v1/customer/track")
    assert [b["access_source_id"] for b in bodies] == [None, None]
    assert [b["entitlement_id"] for b in bodies] == ["credits", "nothing_like_it"]


def test_each_logical_track_gets_its_own_idempotency_key(sdk: Twin) -> None:
    sdk.login()

    sdk.run(sdk.client.track(id="credits", value=1))
    sdk.run(sdk.client.track(id="credits", value=1))
    sdk.run(sdk.client.track(id="credits", value=1, idempotency_key="order-7-export"))

    keys = [r.headers["idempotency-key"] for r in sdk.server.requests[1:]]
    assert keys[0] != keys[1]
    assert keys[2] == "order-7-export"


def test_a_successful_track_sets_remaining_of_the_source_that_paid(sdk: Twin) -> None:
    sdk.login()
    sdk.server.reply(
        "POST",
        "v1/customer/track",
        httpx.Response(200, json=track_answer(requested=5, consumed=5, remaining=95)),
    )

    result = sdk.run(sdk.client.track(id="monthly_credits", value=5))

    assert (result.consumed, result.remaining) == (5, 95)
    plan, promo, *_ = sdk.client.customer.entitlements
    assert (plan.access_source_id, plan.remaining) == ("src_plan", 95)
    assert (promo.access_source_id, promo.remaining) == ("src_promo", 20)  # untouched
    assert sdk.client.get_entitlement("monthly_credits").remaining == 95
    assert sdk.client.get_usage_key("credits").remaining == 120  # only the tracked id


def test_a_successful_track_of_a_usage_key_sets_the_key(sdk: Twin) -> None:
    sdk.login()
    sdk.server.reply(
        "POST",
        "v1/customer/track",
        httpx.Response(
            200, json=track_answer(entitlement_id="credits", access_source_id=None, remaining=117)
        ),
    )

    sdk.run(sdk.client.track(id="credits", value=3))

    assert sdk.client.get_usage_key("credits").remaining == 117
    assert [e.remaining for e in sdk.client.customer.entitlements] == [100, 20, 0, 0]


def test_a_refused_track_changes_nothing_locally(sdk: Twin) -> None:
    before = sdk.login()
    refusal = track_answer(
        success=False, requested=500, consumed=0, remaining=7, error="insufficient_balance"
    )
    sdk.server.reply("POST", "v1/customer/track", httpx.Response(200, json=refusal))

    result = sdk.run(sdk.client.track(id="monthly_credits", value=500))

    assert not result.success
    assert (result.consumed, result.error) == (0, "insufficient_balance")
    assert sdk.client.customer == before


def test_track_before_login_raises_without_any_request(sdk: Twin) -> None:
    with pytest.raises(NotLoggedInError):
        sdk.run(sdk.client.track(id="credits", value=1))
    with pytest.raises(NotLoggedInError):
        sdk.run(sdk.client.refresh_entitlements())
    assert sdk.server.requests == []


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 1.5, "1", None, 2**53])
def test_track_rejects_a_value_that_is_not_a_positive_int_before_any_request(
    sdk: Twin, value: Any
) -> None:
    sdk.login()

    with pytest.raises(InvalidArgumentError) as raised:
        sdk.run(sdk.client.track(id="credits", value=value))

    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, RevenipeClientError)
    assert sdk.server.paths() == ["v1/client/auth"]


def test_track_accepts_the_largest_exact_json_integer(sdk: Twin) -> None:
    sdk.login()

    sdk.run(sdk.client.track(id="credits", value=2**53 - 1))

    assert sdk.server.bodies("v1/customer/track")[0]["value"] == 2**53 - 1


# -- local reads -----------------------------------------------------------------------


def test_local_reads_never_touch_the_network(sdk: Twin) -> None:
    assert sdk.client.get_entitlement("monthly_credits") is None
    assert sdk.client.get_usage_key("credits") is None
    assert not sdk.client.has_entitlement("export_hd")
    sdk.login()
    requests_after_login = len(sdk.server.requests)

    assert sdk.client.has_entitlement("export_hd")
    assert sdk.client.has_entitlement("monthly_credits")
    assert not sdk.client.has_entitlement("old_feature")  # expired in 2020
    assert not sdk.client.has_entitlement("credits")  # a usage key, not an entitlement
    assert not sdk.client.has_entitlement("unknown")
    assert sdk.client.get_entitlement("monthly_credits") == CustomerEntitlement(
        entitlement_id="monthly_credits",
        access_source_id="src_plan",
        type="metered",
        remaining=100,
        expires_at=None,
    )
    assert sdk.client.get_usage_key("credits").name == "Credits"
    assert sdk.client.get_usage_key("monthly_credits") is None
    assert len(sdk.server.requests) == requests_after_login


def test_refresh_reloads_the_lists_and_keeps_the_internal_id(sdk: Twin) -> None:
    sdk.login()
    sdk.server.customer["entitlements"][0]["remaining"] = 42
    sdk.server.customer["usage_keys"] = []

    customer = sdk.run(sdk.client.refresh_entitlements())

    assert sdk.server.bodies("v1/customer/refresh_entitlements") == [{"client_id": INTERNAL_ID}]
    assert customer.client_id == INTERNAL_ID
    assert sdk.client.get_entitlement("monthly_credits").remaining == 42
    assert sdk.client.get_usage_key("credits") is None
    assert sdk.client.customer == customer


def test_clear_session_forgets_the_customer(sdk: Twin) -> None:
    sdk.login()

    sdk.client.clear_session()

    assert sdk.client.customer is None
    assert not sdk.client.is_logged_in
    assert sdk.client.get_entitlement("monthly_credits") is None
    with pytest.raises(NotLoggedInError):
        sdk.run(sdk.client.track(id="credits", value=1))


# -- products and purchases ------------------------------------------------------------


def test_get_products_needs_no_login(sdk: Twin) -> None:
    products = sdk.run(sdk.client.get_products())

    (request,) = sdk.server.requests
    assert (request.method, request.url.path) == ("GET", "/api/v1/customer/app/products")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == APP_ID
    (product,) = products
    assert (product.product_id, product.price, product.recurring_interval) == (
        "pro_monthly",
        999,
        "month",
    )
    assert product.entitlements[0].entitlement_id == "monthly_credits"


def test_purchase_calls_send_the_reference_bodies(sdk: Twin) -> None:
    sdk.login()
    checkout = {
        "purchase_method": "hosted_checkout",
        "product_id": "pro_monthly",
        "product_type": "subscription",
        "checkout": {"session_id": "cs_1", "checkout_url": "https://pay.test/cs_1"},
    }
    sdk.server.reply(
        "POST", "v1/customer/purchase/start_purchase", httpx.Response(200, json=checkout)
    )
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/start_purchase",
        httpx.Response(
            200,
            json={
                "purchase_method": "payment_sheet",
                "product_id": "pro_monthly",
                "product_type": "subscription",
                "subscription": {"subscription_id": "sub_1", "status": "trialing"},
            },
        ),
    )
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/subscription/cancel",
        httpx.Response(
            200,
            json={
                "success": True,
                "status": "active",
                "will_cancel_at_period_end": True,
                "cancels_at": "2026-12-01T00:00:00Z",
            },
        ),
    )
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/subscription/uncancel",
        httpx.Response(200, json={"success": True}),
    )
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/subscription/change_plan",
        httpx.Response(
            200,
            json={
                "success": True,
                "change_type": "upgrade",
                "billing_mode": "immediate",
                "status": "billing_applied",
                "effective_at": "2026-11-25T10:00:00Z",
            },
        ),
    )
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/subscriptions/attach/payment_method",
        httpx.Response(
            200,
            json={
                "mode": "payment_sheet",
                "payment_sheet": {
                    "customer_id": "cus_stripe",
                    "customer_ephemeral_key_secret": "ek_1",
                    "setup_intent_client_secret": "seti_secret",
                },
            },
        ),
    )

    started = sdk.run(
        sdk.client.start_purchase(
            "pro_monthly", success_url="https://app.test/ok", extra_params={"ref": "promo"}
        )
    )
    trial = sdk.run(
        sdk.client.start_purchase(
            "pro_monthly",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="direct",
        )
    )
    canceled = sdk.run(sdk.client.cancel_subscription("src_plan"))
    uncanceled = sdk.run(sdk.client.uncancel_subscription("src_plan"))
    changed = sdk.run(sdk.client.change_plan("src_plan", "max_monthly"))
    attached = sdk.run(sdk.client.attach_payment_method("src_plan", mode="payment_sheet"))

    bodies = [json.loads(r.content) for r in sdk.server.requests[1:]]
    assert bodies == [
        {
            "product_id": "pro_monthly",
            "purchase_method": "hosted_checkout",
            "success_url": "https://app.test/ok",
            "extra_params": {"ref": "promo"},
            "customer_id": INTERNAL_ID,
        },
        {
            "product_id": "pro_monthly",
            "purchase_method": "payment_sheet",
            "trial_payment_method_behavior": "direct",
            "customer_id": INTERNAL_ID,
        },
        {"client_id": INTERNAL_ID, "source_id": "src_plan", "cancel_mode": "period_end"},
        {"client_id": INTERNAL_ID, "source_id": "src_plan"},
        {"client_id": INTERNAL_ID, "source_id": "src_plan", "new_product_id": "max_monthly"},
        {"client_id": INTERNAL_ID, "access_source_id": "src_plan", "mode": "payment_sheet"},
    ]
    assert started.checkout is not None and started.checkout.checkout_url.endswith("cs_1")
    assert started.payment_sheet is None
    assert trial.subscription is not None and trial.subscription.trial_end is None
    assert canceled.cancels_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert canceled.message is None
    assert uncanceled.success
    assert changed.effective_at == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert attached.payment_sheet is not None
    assert attached.payment_sheet.setup_intent_client_secret == "seti_secret"


def test_purchase_calls_check_their_arguments_and_login(sdk: Twin) -> None:
    with pytest.raises(NotLoggedInError):
        sdk.run(sdk.client.cancel_subscription("src_plan"))
    sdk.login()
    with pytest.raises(InvalidArgumentError):
        sdk.run(sdk.client.start_purchase("pro", purchase_method="cash"))
    with pytest.raises(InvalidArgumentError):
        sdk.run(sdk.client.cancel_subscription("src_plan", cancel_mode="tomorrow"))
    with pytest.raises(InvalidArgumentError):
        sdk.run(sdk.client.start_purchase("pro", extra_params={"n": 1}))
    assert sdk.server.paths() == ["v1/client/auth"]


def test_a_purchase_answer_with_two_payment_uis_is_a_protocol_error(sdk: Twin) -> None:
    sdk.login()
    sdk.server.reply(
        "POST",
        "v1/customer/purchase/start_purchase",
        httpx.Response(
            200,
            json={
                "purchase_method": "hosted_checkout",
                "product_id": "p",
                "product_type": "one_time",
                "checkout": {"session_id": "cs", "checkout_url": "u"},
                "setup": {
                    "customer_id": "c",
                    "ephemeral_key": "e",
                    "setup_intent_id": "s",
                    "setup_intent_client_secret": "x",
                },
            },
        ),
    )

    with pytest.raises(ProtocolError, match="at most one"):
        sdk.run(sdk.client.start_purchase("p"))


# -- strict decoding -------------------------------------------------------------------


def test_a_float_remaining_in_a_track_answer_is_a_protocol_error(sdk: Twin) -> None:
    before = sdk.login()
    sdk.server.reply(
        "POST", "v1/customer/track", httpx.Response(200, json=track_answer(remaining=5.0))
    )

    with pytest.raises(ProtocolError, match=r"remaining: expected an integer, got float 5\.0"):
        sdk.run(sdk.client.track(id="monthly_credits", value=1))

    assert sdk.client.customer == before


@pytest.mark.parametrize(
    "breakage",
    [
        {"consumed": None},
        {"requested": True},
        {"success": "true"},
        {"entitlement_id": 7},
        {"error": 0},
    ],
)
def test_a_track_answer_with_a_wrong_field_is_a_protocol_error(
    sdk: Twin, breakage: dict[str, Any]
) -> None:
    sdk.login()
    answer = track_answer(**breakage)
    answer = {k: v for k, v in answer.items() if not (k == "consumed" and v is None)}
    sdk.server.reply("POST", "v1/customer/track", httpx.Response(200, json=answer))

    with pytest.raises(ProtocolError):
        sdk.run(sdk.client.track(id="monthly_credits", value=1))


def test_a_malformed_login_answer_leaves_nobody_logged_in(sdk: Twin) -> None:
    broken = copy.deepcopy(CUSTOMER)
    broken["entitlements"][1]["remaining"] = 5.0
    sdk.server.reply("POST", "v1/client/auth", httpx.Response(200, json=broken))

    with pytest.raises(ProtocolError, match=r"entitlements\[1\]\.remaining"):
        sdk.login()

    assert sdk.client.customer is None


@pytest.mark.parametrize(
    "answer",
    [
        {},  # client_id missing
        {"client_id": None},
        {"client_id": "c", "entitlements": {}},
        {"client_id": "c", "usage_keys": [{"key_id": "k", "name": "K"}]},
        {"client_id": "c", "entitlements": [dict(CUSTOMER["entitlements"][0], expires_at="soon")]},
        [],
    ],
)
def test_malformed_customer_answers_are_protocol_errors(sdk: Twin, answer: Any) -> None:
    sdk.server.reply("POST", "v1/client/auth", httpx.Response(200, json=answer))

    with pytest.raises(ProtocolError):
        sdk.login()


def test_an_answer_that_is_not_json_is_a_protocol_error(sdk: Twin) -> None:
    sdk.server.reply(
        "GET", "v1/customer/app/products", httpx.Response(200, text="<html>proxy</html>")
    )
    sdk.server.reply("GET", "v1/customer/app/products", httpx.Response(200, json={}))

    with pytest.raises(ProtocolError, match="not JSON"):
        sdk.run(sdk.client.get_products())
    with pytest.raises(ProtocolError, match="products"):
        sdk.run(sdk.client.get_products())


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ApiError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ApiError),
        (500, ApiError),
    ],
)
def test_error_answers_raise_typed_errors_with_message_and_code(
    sdk: Twin, status: int, error_type: type[ApiError]
) -> None:
    sdk.server.reply(
        "POST",
        "v1/client/auth",
        httpx.Response(status, json={"message": "nope", "code": "some_code"}),
    )

    with pytest.raises(error_type) as raised:
        sdk.login()

    assert type(raised.value) is error_type
    assert (raised.value.status_code, raised.value.message, raised.value.code) == (
        status,
        "nope",
        "some_code",
    )
    assert raised.value.body == {"message": "nope", "code": "some_code"}
    assert len(sdk.server.requests) == 1  # none of these is retried


def test_rate_limited_carries_retry_after(sdk: Twin) -> None:
    sdk.server.reply(
        "POST",
        "v1/client/auth",
        httpx.Response(429, json={"message": "slow down"}, headers={"Retry-After": "7"}),
    )

    with pytest.raises(RateLimitedError) as raised:
        sdk.login()

    assert raised.value.retry_after == 7.0
    assert raised.value.code is None


def test_an_error_without_json_body_still_has_a_message(sdk: Twin) -> None:
    sdk.server.reply("POST", "v1/client/auth", httpx.Response(500, text="Internal Server Error"))

    with pytest.raises(ApiError) as raised:
        sdk.login()

    assert raised.value.message == "Internal Server Error"
    assert raised.value.body is None


# -- retries and idempotency -----------------------------------------------------------


def test_a_timed_out_track_is_retried_with_the_same_idempotency_key(sdk: Twin) -> None:
    sdk.login()
    sdk.server.reply("POST", "v1/customer/track", httpx.ReadTimeout, httpx.ReadTimeout)

    result = sdk.run(sdk.client.track(id="monthly_credits", value=2))

    attempts = sdk.server.requests[1:]
    assert len(attempts) == 3
    assert len({r.headers["idempotency-key"] for r in attempts}) == 1
    assert len({r.content for r in attempts}) == 1
    assert result.success


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_failures_are_retried_with_the_same_key(sdk: Twin, status: int) -> None:
    sdk.login()
    sdk.server.reply("POST", "v1/customer/track", httpx.Response(status), httpx.ConnectError)

    sdk.run(sdk.client.track(id="credits", value=1))

    attempts = sdk.server.requests[1:]
    assert len(attempts) == 3
    assert len({r.headers["idempotency-key"] for r in attempts}) == 1


def test_retries_are_bounded_then_a_transport_error(sdk: Twin) -> None:
    sdk.login()
    sdk.server.reply("POST", "v1/customer/track", *[httpx.ReadTimeout] * 3)

    with pytest.raises(TransportError, match="3 attempts") as raised:
        sdk.run(sdk.client.track(id="credits", value=1))

    assert isinstance(raised.value.__cause__, httpx.ReadTimeout)
    assert len(sdk.server.requests) == 1 + 3  # the first try and max_retries=2 retries
    assert sdk.client.get_usage_key("credits").remaining == 120


def test_a_gateway_error_after_the_last_retry_is_an_api_error(sdk: Twin) -> None:
    sdk.configure(max_retries=1, retry_backoff=0)
    sdk.server.reply(
        "POST",
        "v1/client/auth",
        httpx.Response(503, json={"message": "down"}),
        httpx.Response(503, json={"message": "down"}),
    )

    with pytest.raises(ApiError) as raised:
        sdk.login()

    assert raised.value.status_code == 503
    assert len(sdk.server.requests) == 2


def test_max_retries_zero_sends_once(sdk: Twin) -> None:
    sdk.configure(max_retries=0)
    sdk.server.reply("POST", "v1/client/auth", httpx.ConnectError)

    with pytest.raises(TransportError, match="1 attempt"):
        sdk.login()

    assert len(sdk.server.requests) == 1


def test_a_purchase_is_only_resent_when_it_surely_never_arrived(sdk: Twin) -> None:
    sdk.login()
    path = "v1/customer/purchase/start_purchase"
    sdk.server.reply("POST", path, httpx.ReadTimeout)
    with pytest.raises(TransportError):
        sdk.run(sdk.client.start_purchase("pro"))
    sdk.server.reply("POST", path, httpx.Response(502))
    with pytest.raises(ApiError):
        sdk.run(sdk.client.start_purchase("pro"))
    assert sdk.server.paths().count(path) == 2

    checkout = {
        "purchase_method": "hosted_checkout",
        "product_id": "pro",
        "product_type": "one_time",
    }
    sdk.server.reply("POST", path, httpx.ConnectError, httpx.Response(200, json=checkout))
    sdk.run(sdk.client.start_purchase("pro"))
    assert sdk.server.paths().count(path) == 4


# -- customer tokens -------------------------------------------------------------------


def test_the_customer_token_is_supplied_cached_and_sent(sdk: Twin) -> None:
    asked: list[str] = []

    def supplier(external_id: str) -> str:
        asked.append(external_id)
        return f"tok-{external_id}-{len(asked)}"

    sdk.configure(customer_token_supplier=supplier)
    sdk.login("user-42")
    sdk.run(sdk.client.track(id="credits", value=1))
    sdk.run(sdk.client.get_products())

    assert asked == ["user-42"]
    tokens = [r.headers["x-revenipe-customer-token"] for r in sdk.server.requests]
    assert tokens == ["tok-user-42-1"] * 3
    assert all(r.headers["authorization"] == APP_ID for r in sdk.server.requests)


def test_a_401_asks_the_supplier_once_more_and_resends(sdk: Twin) -> None:
    asked: list[str] = []

    def supplier(external_id: str) -> str:
        asked.append(external_id)
        return f"tok-{len(asked)}"

    sdk.configure(customer_token_supplier=supplier)
    sdk.login("user-42")
    sdk.server.reply(
        "POST",
        "v1/customer/track",
        httpx.Response(401, json={"message": "token expired", "code": "token_expired"}),
    )

    result = sdk.run(sdk.client.track(id="credits", value=1))

    assert result.success
    assert asked == ["user-42", "user-42"]
    first, second = sdk.server.requests[1:]
    assert first.headers["x-revenipe-customer-token"] == "tok-1"
    assert second.headers["x-revenipe-customer-token"] == "tok-2"
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    # The fresh token is kept for what follows.
    sdk.run(sdk.client.refresh_entitlements())
    assert sdk.server.requests[-1].headers["x-revenipe-customer-token"] == "tok-2"


def test_a_second_401_is_an_authentication_error(sdk: Twin) -> None:
    asked: list[str] = []

    def supplier(external_id: str) -> str:
        asked.append(external_id)
        return "t"

    sdk.configure(customer_token_supplier=supplier)
    denied = httpx.Response(401, json={"message": "bad token", "code": "invalid_token"})
    sdk.server.reply("POST", "v1/client/auth", denied, denied)

    with pytest.raises(AuthenticationError) as raised:
        sdk.login("user-42")

    assert raised.value.code == "invalid_token"
    assert len(asked) == 2
    assert len(sdk.server.requests) == 2
    assert sdk.client.customer is None


def test_without_a_supplier_a_401_is_not_resent(sdk: Twin) -> None:
    sdk.server.reply("POST", "v1/client/auth", httpx.Response(401, json={"message": "no"}))

    with pytest.raises(AuthenticationError):
        sdk.login()

    assert len(sdk.server.requests) == 1


def test_a_new_customer_gets_a_new_token(sdk: Twin) -> None:
    asked: list[str] = []

    def supplier(external_id: str) -> str:
        asked.append(external_id)
        return f"tok-{external_id}"

    sdk.configure(customer_token_supplier=supplier)
    sdk.login("alice")
    sdk.login("bob")
    sdk.client.clear_session()
    sdk.login("bob")

    assert asked == ["alice", "bob", "bob"]
    assert sdk.server.requests[1].headers["x-revenipe-customer-token"] == "tok-bob"


def test_a_supplier_returning_no_token_is_an_invalid_argument(sdk: Twin) -> None:
    sdk.configure(customer_token_supplier=lambda external_id: "")

    with pytest.raises(InvalidArgumentError, match="non-empty string"):
        sdk.login()

    assert sdk.server.requests == []


def test_the_async_client_awaits_an_async_supplier() -> None:
    server = FakeServer()

    async def supplier(external_id: str) -> str:
        await asyncio.sleep(0)
        return f"async-{external_id}"

    async def scenario() -> None:
        config = RevenipeConfig(
            app_id=APP_ID,
            base_url=BASE_URL,
            transport=httpx.MockTransport(server),
            customer_token_supplier=supplier,
        )
        async with Revenipe(config) as client:
            await client.login("user-42")
            await client.track(id="credits", value=1)

    asyncio.run(scenario())

    assert [r.headers["x-revenipe-customer-token"] for r in server.requests] == [
        "async-user-42"
    ] * 2


def test_the_sync_client_refuses_an_async_supplier() -> None:
    server = FakeServer()

    async def supplier(external_id: str) -> str:
        return "never"

    client = RevenipeSync(
        RevenipeConfig(
            app_id=APP_ID,
            base_url=BASE_URL,
            transport=httpx.MockTransport(server),
            customer_token_supplier=supplier,
        )
    )

    with pytest.raises(InvalidArgumentError, match="sync supplier"):
        client.login("user-42")
    assert server.requests == []


# -- configuration ---------------------------------------------------------------------


def test_an_unconfigured_client_raises(sdk: Twin) -> None:
    client = Revenipe() if sdk.kind == "async" else RevenipeSync()

    with pytest.raises(NotConfiguredError):
        sdk.run(client.login("user-42"))
    with pytest.raises(NotConfiguredError):
        sdk.run(client.get_products())


def test_instance_is_one_client_per_twin() -> None:
    assert Revenipe.instance is Revenipe.instance
    assert RevenipeSync.instance is RevenipeSync.instance
    assert isinstance(Revenipe.instance, Revenipe)
    assert isinstance(RevenipeSync.instance, RevenipeSync)


def test_configuring_the_instance_then_using_it() -> None:
    server = FakeServer()
    previous = RevenipeSync.instance.config
    RevenipeSync.instance.configure(
        RevenipeConfig(app_id=APP_ID, base_url=BASE_URL, transport=httpx.MockTransport(server))
    )
    try:
        RevenipeSync.instance.login("user-42")
        assert RevenipeSync.instance.has_entitlement("export_hd")
    finally:
        RevenipeSync.instance.clear_session()
        if previous is not None:
            RevenipeSync.instance.configure(previous)


def test_reconfiguring_for_another_app_forgets_the_customer(sdk: Twin) -> None:
    client = sdk.client
    sdk.login()
    config = client.config

    client.configure(config)  # same app and server: still logged in
    assert client.is_logged_in
    client.configure(RevenipeConfig(**{**vars(config), "app_id": "other_app"}))
    assert not client.is_logged_in


@pytest.mark.parametrize(
    "overrides",
    [
        {"app_id": ""},
        {"base_url": "revenipe.test/api"},
        {"base_url": "ftp://revenipe.test/"},
        {"default_headers": {"Authorization": "Bearer sk_x"}},
        {"default_headers": {"idempotency-key": "fixed"}},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"retry_backoff": -1},
        {"customer_token_supplier": "token"},
    ],
)
def test_bad_configurations_are_rejected(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"app_id": APP_ID, "base_url": BASE_URL, **overrides}

    with pytest.raises(InvalidArgumentError):
        RevenipeConfig(**settings)


def test_each_twin_checks_its_transport_kind() -> None:
    with pytest.raises(InvalidArgumentError, match="AsyncBaseTransport"):
        Revenipe(RevenipeConfig(app_id=APP_ID, base_url=BASE_URL, transport=httpx.HTTPTransport()))
    with pytest.raises(InvalidArgumentError, match="BaseTransport"):
        RevenipeSync(
            RevenipeConfig(app_id=APP_ID, base_url=BASE_URL, transport=httpx.AsyncHTTPTransport())
        )


def test_both_twins_offer_the_same_methods() -> None:
    def public(cls: type) -> dict[str, bool]:
        return {
            name: inspect.iscoroutinefunction(member)
            for name, member in vars(cls).items()
            if not name.startswith("_")
        }

    async_api, sync_api = public(Revenipe), public(RevenipeSync)
    assert set(async_api) - {"aclose"} == set(sync_api) - {"close"}
    network = {
        "login",
        "anonym_login",
        "track",
        "refresh_entitlements",
        "get_products",
        "start_purchase",
        "cancel_subscription",
        "uncancel_subscription",
        "change_plan",
        "attach_payment_method",
        "aclose",
    }
    assert {name for name, is_async in async_api.items() if is_async} == network
    assert not any(sync_api.values())
    for name in set(async_api) & set(sync_api):
        a, s = getattr(Revenipe, name), getattr(RevenipeSync, name)
        if callable(a):
            a_signature, s_signature = inspect.signature(a), inspect.signature(s)
            if name == "reserve":  # an async and a plain context manager
                assert (a_signature.return_annotation, s_signature.return_annotation) == (
                    "AsyncHold",
                    "SyncHold",
                )
                a_signature = a_signature.replace(return_annotation=None)
                s_signature = s_signature.replace(return_annotation=None)
            assert a_signature == s_signature, name


def test_idempotency_keys_are_uuid4() -> None:
    server = FakeServer()
    client = RevenipeSync(
        RevenipeConfig(app_id=APP_ID, base_url=BASE_URL, transport=httpx.MockTransport(server))
    )
    client.login("u")
    client.track(id="credits", value=1)

    key = server.requests[-1].headers["idempotency-key"]
    assert uuid.UUID(key).version == 4


def test_the_sync_client_can_be_shared_by_threads() -> None:
    server = FakeServer()
    client = RevenipeSync(
        RevenipeConfig(app_id=APP_ID, base_url=BASE_URL, transport=httpx.MockTransport(server))
    )
    client.login("u")

    def work() -> list[TrackResult]:
        return [client.track(id="monthly_credits", value=1) for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for batch in pool.map(lambda _: work(), range(8)) for r in batch]

    assert len(results) == 80 and all(r.success for r in results)
    tracks = [r for r in server.requests if r.url.path.endswith("/track")]
    assert len({r.headers["idempotency-key"] for r in tracks}) == 80
    entitlement = client.get_entitlement("monthly_credits")
    assert entitlement is not None and entitlement.remaining == 99
