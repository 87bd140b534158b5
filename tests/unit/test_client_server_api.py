"""The server-API clients (`RevenipeServerClient`, `AsyncRevenipeServerClient`).

Both twins run every test (the `api` fixture) against an `httpx.MockTransport` that
records requests, so the tests pin the exact paths, methods, headers and bodies.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from revenipe.client import (
    ApiError,
    AsyncRevenipeServerClient,
    CustomerToken,
    InvalidArgumentError,
    NotFoundError,
    ProtocolError,
    RevenipeServerClient,
    TransportError,
)

BASE_URL = "https://revenipe.test/"
SECRET = "sk_test_secret"

Reply = httpx.Response | type[httpx.TransportError]


class Recorder:
    """Answers every request with the next scripted reply, or `{"ok": true}`."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: list[Reply] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, type):
                raise reply("simulated failure", request=request)
            return reply
        return httpx.Response(200, json={"ok": True})


class Api:
    def __init__(self, kind: str, runner: asyncio.Runner, **options: Any) -> None:
        self.kind = kind
        self.recorder = Recorder()
        self._runner = runner
        settings: dict[str, Any] = {
            "transport": httpx.MockTransport(self.recorder),
            "retry_backoff": 0,
            **options,
        }
        cls = AsyncRevenipeServerClient if kind == "async" else RevenipeServerClient
        self.client: Any = cls(BASE_URL, SECRET, **settings)

    def run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            return self._runner.run(_awaited(value))
        return value

    @property
    def last(self) -> httpx.Request:
        return self.recorder.requests[-1]


async def _awaited(value: Any) -> Any:
    return await value


@pytest.fixture(params=["async", "sync"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    with asyncio.Runner() as runner:
        twin = Api(request.param, runner)
        yield twin
        close = getattr(twin.client, "aclose", None) or twin.client.close
        twin.run(close())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_mint_customer_token_sends_bearer_and_decodes_the_token(api: Api) -> None:
    api.recorder.replies.append(
        httpx.Response(200, json={"token": "ct_abc", "expires_at": "2026-11-25T10:15:00Z"})
    )

    token = api.run(api.client.mint_customer_token("user/42 é", ttl_seconds=900))

    request = api.last
    assert request.method == "POST"
    assert request.url.raw_path == b"/v1/customers/user%2F42%20%C3%A9/tokens"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert body(request) == {"ttl_seconds": 900}
    assert token == CustomerToken(
        token="ct_abc", expires_at=datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    )


def test_mint_without_ttl_sends_an_empty_body(api: Api) -> None:
    api.recorder.replies.append(
        httpx.Response(200, json={"token": "t", "expires_at": "2026-11-25T10:15:00Z"})
    )

    api.run(api.client.mint_customer_token("u"))

    assert body(api.last) == {}


def test_a_malformed_token_answer_is_a_protocol_error(api: Api) -> None:
    api.recorder.replies.append(httpx.Response(200, json={"token": "t", "expires_at": 1}))

    with pytest.raises(ProtocolError, match="expires_at"):
        api.run(api.client.mint_customer_token("u"))


CALLS: list[tuple[str, Callable[[Any], Any], str, str, Any]] = [
    ("get_customer", lambda c: c.get_customer("u1"), "GET", "/v1/customers/u1", None),
    (
        "grant_product",
        lambda c: c.grant_product("u1", "pro"),
        "POST",
        "/v1/customers/u1/grants",
        {"product_id": "pro"},
    ),
    (
        "grant_entitlement",
        lambda c: c.grant_entitlement("u1", "monthly_credits", 50),
        "POST",
        "/v1/customers/u1/grants",
        {"entitlement_id": "monthly_credits", "amount": 50},
    ),
    (
        "grant_entitlement_full",
        lambda c: c.grant_entitlement(
            "u1",
            "monthly_credits",
            50,
            expires_at=datetime(2027, 1, 1, tzinfo=UTC),
            priority=-1,
        ),
        "POST",
        "/v1/customers/u1/grants",
        {
            "entitlement_id": "monthly_credits",
            "amount": 50,
            "expires_at": "2027-01-01T00:00:00+00:00",
            "priority": -1,
        },
    ),
    (
        "track",
        lambda c: c.track("u1", "credits", 2),
        "POST",
        "/v1/customers/u1/track",
        {"id": "credits", "value": 2},
    ),
    (
        "track_with_source",
        lambda c: c.track("u1", "monthly_credits", 2, access_source_id="src_1"),
        "POST",
        "/v1/customers/u1/track",
        {"id": "monthly_credits", "value": 2, "access_source_id": "src_1"},
    ),
    (
        "check",
        lambda c: c.check("u1", "credits", 3),
        "POST",
        "/v1/customers/u1/check",
        {"id": "credits", "value": 3},
    ),
    (
        "reverse",
        lambda c: c.reverse_usage_event("ue_1"),
        "POST",
        "/v1/usage_events/ue_1/reversals",
        {},
    ),
    (
        "reverse_partly",
        lambda c: c.reverse_usage_event("ue_1", amount=1),
        "POST",
        "/v1/usage_events/ue_1/reversals",
        {"amount": 1},
    ),
    ("get_catalog", lambda c: c.get_catalog(), "GET", "/v1/catalog", None),
    (
        "put_catalog",
        lambda c: c.put_catalog({"entitlements": [], "products": []}),
        "PUT",
        "/v1/catalog",
        {"entitlements": [], "products": []},
    ),
    (
        "validate_catalog",
        lambda c: c.validate_catalog({"entitlements": []}),
        "POST",
        "/v1/catalog/validate",
        {"entitlements": []},
    ),
    ("sandbox_clock", lambda c: c.sandbox_clock(), "GET", "/v1/sandbox/clock", None),
    (
        "advance_sandbox_clock",
        lambda c: c.advance_sandbox_clock(days=31, hours=2),
        "POST",
        "/v1/sandbox/clock/advance",
        {"days": 31, "hours": 2, "seconds": 0},
    ),
    (
        "request",
        lambda c: c.request("GET", "v1/ledger", params={"customer": "u1"}),
        "GET",
        "/v1/ledger",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "method", "path", "expected_body"), CALLS, ids=[c[0] for c in CALLS]
)
def test_each_call_sends_its_method_path_and_body(
    api: Api,
    name: str,
    call: Callable[[Any], Any],
    method: str,
    path: str,
    expected_body: Any,
) -> None:
    answer = api.run(call(api.client))

    request = api.last
    assert (request.method, request.url.path) == (method, path)
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    if expected_body is None:
        assert request.content == b""
    else:
        assert body(request) == expected_body
    assert answer == {"ok": True}


def test_list_usage_events_sends_its_filters_as_query_parameters(api: Api) -> None:
    api.run(
        api.client.list_usage_events(
            customer="user 42",
            id="credits",
            since=datetime(2026, 11, 1, tzinfo=UTC),
            until="2026-12-01T00:00:00Z",
            cursor="abc",
            limit=50,
        )
    )
    api.run(api.client.list_usage_events())

    first, second = api.recorder.requests
    assert first.url.path == "/v1/usage_events"
    assert dict(first.url.params) == {
        "customer": "user 42",
        "id": "credits",
        "since": "2026-11-01T00:00:00+00:00",
        "until": "2026-12-01T00:00:00Z",
        "cursor": "abc",
        "limit": "50",
    }
    assert dict(second.url.params) == {}


def test_track_carries_an_idempotency_key_reused_on_retries(api: Api) -> None:
    api.recorder.replies.extend([httpx.ReadTimeout, httpx.Response(503)])

    api.run(api.client.track("u1", "credits", 1))
    api.run(api.client.track("u1", "credits", 1, idempotency_key="job-9"))

    keys = [r.headers["idempotency-key"] for r in api.recorder.requests]
    assert len(keys) == 4
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] == "job-9"


def test_moving_the_clock_is_not_resent_once_it_may_have_arrived(api: Api) -> None:
    api.recorder.replies.append(httpx.ReadTimeout)
    with pytest.raises(TransportError):
        api.run(api.client.advance_sandbox_clock(days=1))
    assert len(api.recorder.requests) == 1


def test_grants_are_not_resent_once_they_may_have_arrived(api: Api) -> None:
    api.recorder.replies.append(httpx.ReadTimeout)
    with pytest.raises(TransportError):
        api.run(api.client.grant_product("u1", "pro"))
    assert len(api.recorder.requests) == 1

    api.recorder.replies.append(httpx.ConnectError)
    api.run(api.client.grant_product("u1", "pro"))
    assert len(api.recorder.requests) == 3


def test_errors_are_the_sdk_errors(api: Api) -> None:
    api.recorder.replies.append(
        httpx.Response(404, json={"message": "no such customer", "code": "customer_not_found"})
    )
    api.recorder.replies.append(
        httpx.Response(422, json={"message": "invalid catalog", "code": "catalog_invalid"})
    )

    with pytest.raises(NotFoundError) as not_found:
        api.run(api.client.get_customer("ghost"))
    with pytest.raises(ApiError) as invalid:
        api.run(api.client.validate_catalog({}))

    assert not_found.value.code == "customer_not_found"
    assert (invalid.value.status_code, invalid.value.code) == (422, "catalog_invalid")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_customer(""),
        lambda c: c.get_customer(".."),
        lambda c: c.reverse_usage_event("."),
        lambda c: c.track("u1", "credits", 1.0),
        lambda c: c.track("u1", "credits", True),
        lambda c: c.check("u1", "credits", 0),
        lambda c: c.grant_entitlement("u1", "credits", "5"),
        lambda c: c.grant_entitlement("u1", "credits", 5, expires_at=datetime(2027, 1, 1)),
        lambda c: c.mint_customer_token("u1", ttl_seconds=0),
        lambda c: c.list_usage_events(limit=0),
        lambda c: c.request("GET", "/v1/catalog"),
        lambda c: c.request("DELETE", "v1/catalog"),
        lambda c: c.advance_sandbox_clock(),
        lambda c: c.advance_sandbox_clock(days=-1),
        lambda c: c.advance_sandbox_clock(hours=1.5),
    ],
)
def test_bad_arguments_are_refused_before_any_request(api: Api, call: Callable[[Any], Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        api.run(call(api.client))

    assert api.recorder.requests == []


def test_bad_construction_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        RevenipeServerClient(BASE_URL, "")
    with pytest.raises(InvalidArgumentError):
        RevenipeServerClient("not a url", SECRET)
    with pytest.raises(InvalidArgumentError):
        AsyncRevenipeServerClient(BASE_URL, SECRET, default_headers={"authorization": "x"})


def test_the_server_twins_offer_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(AsyncRevenipeServerClient) - {"aclose"} == public(RevenipeServerClient) - {
        "close"
    }
    for name in public(RevenipeServerClient) - {"close"}:
        sync_method = getattr(RevenipeServerClient, name)
        async_method = getattr(AsyncRevenipeServerClient, name)
        assert inspect.iscoroutinefunction(async_method), name
        assert inspect.signature(sync_method) == inspect.signature(async_method), name


def test_track_batch_fills_keys_once_and_resends_the_same_body(api: Api) -> None:
    api.recorder.replies.extend([httpx.Response(503), httpx.Response(200, json={"items": []})])
    items = [
        {"customer": "u1", "id": "credits", "value": 2, "idempotency_key": "mine"},
        {"customer": "u2", "id": "image_generation", "value": -1},  # the server says why
    ]

    api.run(api.client.track_batch(items))

    first, second = api.recorder.requests
    assert first.method == "POST" and first.url.raw_path == b"/v1/track/batch"
    assert body(first) == body(second)
    sent = body(first)["items"]
    assert sent[0] == items[0]
    assert sent[1]["value"] == -1 and len(sent[1]["idempotency_key"]) == 36


@pytest.mark.parametrize("items", [[], [{"customer": "u"}] * 1001, "items"])
def test_track_batch_refuses_an_empty_or_oversized_batch(api: Api, items: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        api.run(api.client.track_batch(items))
    assert api.recorder.requests == []
