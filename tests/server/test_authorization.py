"""Who may do what, over HTTP: the client protocol's customer tokens and the server
API's secret keys.

Under the default `enforce` policy a client request carries the app's public id in
`Authorization` and a customer token (minted by the app's backend) in
`X-Revenipe-Customer-Token`; every customer id in the body must be the token's customer,
and every access source id must be one of that customer's. Refusals are 401 (who are
you?) or 403 (not for you), always JSON with `code` and `message`, and change nothing.

Under the `open` policy (chosen explicitly with `PATCH /v1/app`) the original,
token-less protocol works: anyone holding the public app id may name any `client_id` of
that app. A token, if one is sent anyway, must still be valid and match.

The apps are sandbox apps, so purchases really happen: in the matrix below alice, bob
and carol each hold a live `pro` subscription bought through the sandbox checkout. No
customer can start, cancel, uncancel, change or attach to anything of another; another
customer's subscription gets exactly the answer of an id that does not exist (nothing
leaks), and nothing changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from revenipe.engine.tokens import TokenClaims, sign_token

from .conftest import (
    ANONYMOUS_LOGINS_PER_MINUTE,
    TOKEN_HEADER,
    TestClient,
    World,
    assert_error,
    assert_unchanged,
    fingerprint,
    ok,
    snapshot,
    subscribe,
)
from support import Clock, assert_verified

MADE_UP_CUSTOMER = "cus_0000000000000000000000dead"
MADE_UP_SOURCE = "src_0000000000000000000000dead"
ANONYMOUS_ID = "0f" * 16


def refresh(world: World, client_id: str, headers: dict[str, str]) -> Any:
    return world.http.post(
        "/v1/customer/refresh_entitlements", json={"client_id": client_id}, headers=headers
    )


def track(world: World, client_id: str, headers: dict[str, str], value: int = 1) -> Any:
    body = {"client_id": client_id, "entitlement_id": "credits", "value": value}
    return world.http.post("/v1/customer/track", json=body, headers=headers)


def login(world: World, external_id: str, headers: dict[str, str], http: Any = None) -> Any:
    return (http or world.http).post(
        "/v1/client/auth", json={"client_id": external_id}, headers=headers
    )


def credits(world: World, external_id: str) -> int:
    """The `credits` usage key's remaining amount, as the server API shows it (app A)."""
    state = ok(world.http.get(f"/v1/customers/{external_id}", headers=world.a.api()))
    (key,) = (k for k in state["usage_keys"] if k["key_id"] == "credits")
    remaining: int = key["remaining"]
    return remaining


# --- the matrix: every client endpoint x every id field x someone else's id ------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    customer_field: str
    source_field: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ENDPOINTS = [
    Endpoint("auth", "/v1/client/auth", "client_id"),
    Endpoint("refresh_entitlements", "/v1/customer/refresh_entitlements", "client_id"),
    Endpoint(
        "track",
        "/v1/customer/track",
        "client_id",
        "access_source_id",
        {"entitlement_id": "credits", "value": 1},
    ),
    Endpoint(
        "start_purchase",
        "/v1/customer/purchase/start_purchase",
        "customer_id",
        None,
        {"product_id": "pro", "purchase_method": "hosted_checkout"},
    ),
    Endpoint(
        "cancel",
        "/v1/customer/purchase/subscription/cancel",
        "client_id",
        "source_id",
        {"cancel_mode": "period_end"},
    ),
    Endpoint("uncancel", "/v1/customer/purchase/subscription/uncancel", "client_id", "source_id"),
    Endpoint(
        "change_plan",
        "/v1/customer/purchase/subscription/change_plan",
        "client_id",
        "source_id",
        {"new_product_id": "basic"},
    ),
    Endpoint(
        "attach_payment_method",
        "/v1/customer/purchase/subscriptions/attach/payment_method",
        "client_id",
        "access_source_id",
        {"mode": "hosted_checkout"},
    ),
]

WHOSE = ("another customer of the app", "a customer of another app", "a made-up id")


def other_customer_ids(world: World, endpoint: Endpoint) -> dict[str, str]:
    bob, carol = world.a.customers["bob"], world.b.customers["carol"]
    if endpoint.name == "auth":  # `v1/client/auth` names the customer by external id
        return dict(zip(WHOSE, ("bob", "carol", "mallory"), strict=True))
    return dict(zip(WHOSE, (bob.client_id, carol.client_id, MADE_UP_CUSTOMER), strict=True))


def other_source_ids(world: World, endpoint: Endpoint) -> dict[str, str]:
    """Someone else's source the endpoint could act on: for track a grant's source, for
    the purchase endpoints a live subscription bought in the sandbox."""
    product = "welcome" if endpoint.name == "track" else "pro"
    bob, carol = world.a.customers["bob"], world.b.customers["carol"]
    sources = (bob.sources[product], carol.sources[product], MADE_UP_SOURCE)
    return dict(zip(WHOSE, sources, strict=True))


@pytest.fixture
def subscribed(world: World) -> World:
    """The world, with a sandbox `pro` subscription for alice, bob and carol."""
    for tenant, name in ((world.a, "alice"), (world.a, "bob"), (world.b, "carol")):
        subscribe(world.http, tenant, name, "pro")
    return world


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_ids_of_others_are_refused(subscribed: World, endpoint: Endpoint) -> None:
    world = subscribed
    a, alice = world.a, world.a.customers["alice"]
    own_source = alice.sources["free" if endpoint.name == "track" else "pro"]
    before = snapshot(world)
    last = fingerprint(world)

    for whose, victim in other_customer_ids(world, endpoint).items():
        body = {endpoint.customer_field: victim, **endpoint.extra}
        if endpoint.source_field:
            body[endpoint.source_field] = own_source
        response = world.http.post(endpoint.path, json=body, headers=a.as_customer("alice"))
        error = assert_error(response, 403, "forbidden")
        assert victim not in error["message"], (whose, error)
        assert TOKEN_HEADER not in response.headers, whose
        assert fingerprint(world) == last, f"{endpoint.name}: {whose} changed something"

    if endpoint.source_field:
        answers = {}
        for whose, source in other_source_ids(world, endpoint).items():
            body = {
                endpoint.customer_field: alice.client_id,
                endpoint.source_field: source,
                **endpoint.extra,
            }
            response = world.http.post(endpoint.path, json=body, headers=a.as_customer("alice"))
            now = fingerprint(world)
            if endpoint.name == "track":
                # A refusal is an answer, recorded as alice's usage event; nothing is spent.
                result = ok(response)
                assert result["success"] is False and result["consumed"] == 0, (whose, result)
                assert result["error"] == "unknown_access_source", (whose, result)
                assert result["remaining"] == 0, (whose, result)  # nothing about the source
                events = now["usage_events"].get(a.app_id, 0)
                assert events == last["usage_events"].get(a.app_id, 0) + 1
                now["usage_events"] = last["usage_events"]
            else:
                assert_error(response, 404, "access_source_not_found")
            assert now == last, f"{endpoint.name}: {whose}'s source changed something"
            last = fingerprint(world)
            answer = response.json()
            answer.pop(endpoint.source_field, None)
            answers[whose] = (response.status_code, answer)
        # Someone else's source is answered exactly like a source that does not exist.
        assert len({json.dumps(v, sort_keys=True) for v in answers.values()}) == 1, answers

    ignore = {"A/usage_events"} if endpoint.name == "track" else set()
    assert_unchanged(world, before, ignore=ignore)
    # bob's and carol's histories are untouched whatever happened to alice's.
    for tenant, name in ((world.a, "bob"), (world.b, "carol")):
        events = ok(world.http.get(f"/v1/usage_events?customer={name}", headers=tenant.api()))
        assert events["usage_events"] == [], name


def test_own_ids_are_accepted(subscribed: World) -> None:
    """The baseline of the matrix: with her own ids alice gets through every check, and
    every purchase endpoint acts on her own subscription."""
    world = subscribed
    a, alice = world.a, world.a.customers["alice"]
    headers = a.as_customer("alice")
    assert ok(login(world, "alice", headers))["client_id"] == alice.client_id
    assert ok(refresh(world, alice.client_id, headers))["usage_keys"]
    body = {
        "client_id": alice.client_id,
        "entitlement_id": "credits",
        "value": 1,
        "access_source_id": alice.sources["pack_50"],
    }
    result = ok(world.http.post("/v1/customer/track", json=body, headers=headers))
    assert result["success"] is True and result["remaining"] == 49, result
    products = ok(world.http.get("/v1/customer/app/products", headers=headers))
    assert {p["product_id"] for p in products["products"]} == {
        "free",
        "pro",
        "pack_50",
        "welcome",
        "basic",
    }
    answers = {}
    for endpoint in ENDPOINTS[3:]:
        body = {endpoint.customer_field: alice.client_id, **endpoint.extra}
        if endpoint.source_field:
            body[endpoint.source_field] = alice.sources["pro"]
        if endpoint.name == "start_purchase":
            body["product_id"] = "pack_50"
        answers[endpoint.name] = ok(world.http.post(endpoint.path, json=body, headers=headers))
    assert answers["start_purchase"]["checkout"]["checkout_url"], answers
    assert answers["cancel"]["will_cancel_at_period_end"] is True, answers
    assert answers["uncancel"] == {"success": True}
    assert answers["change_plan"]["change_type"] == "downgrade", answers
    assert answers["change_plan"]["status"] == "pending", answers
    assert answers["attach_payment_method"]["checkout"]["checkout_url"], answers
    (pro,) = (
        s
        for s in ok(refresh(world, alice.client_id, headers))["subscriptions"]
        if s["access_source_id"] == alice.sources["pro"]
    )
    assert pro["will_cancel_at_period_end"] is False
    assert pro["pending_change"]["to_product_id"] == "basic", pro
    assert_verified(world.backend)


def test_products_are_the_apps_own(world: World) -> None:
    """`app/products` names no customer: only the app id (and the token, if sent) count."""
    changed = ok(world.http.get("/v1/catalog", headers=world.b.api()))["catalog"]
    changed["products"].append(
        {
            "id": "gem_pack",
            "name": "Gems",
            "type": "one_time",
            "grants": [{"entitlement": "bonus_credits", "amount": 5}],
        }
    )
    ok(world.http.put("/v1/catalog", json=changed, headers=world.b.api()))
    a_products = ok(
        world.http.get("/v1/customer/app/products", headers=world.a.as_customer("alice"))
    )
    b_products = ok(
        world.http.get("/v1/customer/app/products", headers=world.b.as_customer("carol"))
    )
    assert "gem_pack" not in {p["product_id"] for p in a_products["products"]}
    assert "gem_pack" in {p["product_id"] for p in b_products["products"]}
    # alice's token with app B's id: the token is checked with B's secret and refused.
    response = world.http.get(
        "/v1/customer/app/products", headers=world.b.client(world.a.customers["alice"].token)
    )
    assert_error(response, 401, "token_bad_signature")
    assert_error(world.http.get("/v1/customer/app/products"), 401, "invalid_app_id")


# --- tokens ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _with_payload(token: str, payload: dict[str, Any]) -> str:
    """`token` with its payload replaced and its (now wrong) signature kept."""
    prefix, _, signature = token.split(".")
    return f"{prefix}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}.{signature}"


def _signed(secret: str, app_id: str, customer_id: str, clock: Clock) -> str:
    return sign_token(secret, TokenClaims(app_id, customer_id, clock.now + timedelta(hours=1)))


def _raw_signed(secret: str, payload: Any) -> str:
    """A token signed correctly over an arbitrary payload."""
    signed = f"rvt1.{_b64(json.dumps(payload).encode())}"
    signature = _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())
    return f"{signed}.{signature}"


def bad_tokens(world: World, clock: Clock) -> dict[str, tuple[str | bytes, int, str | None]]:
    """Tokens presented for alice (app A): name -> (token, status, code or None: any).

    Header values are Latin-1 on the wire: a token may carry any byte but control ones."""
    a, b = world.a, world.b
    alice, bob, carol = a.customers["alice"], a.customers["bob"], b.customers["carol"]
    exp = int((clock.now + timedelta(hours=1)).timestamp())
    last = alice.token[-1]
    return {
        "another app's token": (carol.token, 401, "token_bad_signature"),
        "signed by A but for app B": (
            _signed(a.signing_secret, b.app_id, alice.client_id, clock),
            401,
            "token_wrong_app",
        ),
        "another customer's token": (bob.token, 403, "forbidden"),
        "signed with B's secret": (
            _signed(b.signing_secret, a.app_id, alice.client_id, clock),
            401,
            "token_bad_signature",
        ),
        "payload tampered (cus)": (
            _with_payload(bob.token, {**_payload(bob.token), "cus": alice.client_id}),
            401,
            "token_bad_signature",
        ),
        "payload tampered (exp)": (
            _with_payload(alice.token, {**_payload(alice.token), "exp": exp + 10**6}),
            401,
            "token_bad_signature",
        ),
        "unsigned": (alice.token.rsplit(".", 1)[0] + ".", 401, "token_bad_signature"),
        "no signature part": (alice.token.rsplit(".", 1)[0], 401, "token_malformed"),
        "signature changed": (
            alice.token[:-1] + ("A" if last != "A" else "B"),
            401,
            "token_bad_signature",
        ),
        "garbage": ("garbage", 401, "token_malformed"),
        "empty": ("", 401, "token_malformed"),
        "other version": ("rvt2" + alice.token[4:], 401, "token_malformed"),
        "payload not base64 json": ("rvt1.!!!!.xyz", 401, "token_malformed"),
        "payload a json list": (_raw_signed(a.signing_secret, []), 401, "token_malformed"),
        "exp a string": (
            _raw_signed(
                a.signing_secret, {"app": a.app_id, "cus": alice.client_id, "exp": str(exp)}
            ),
            401,
            "token_malformed",
        ),
        "exp a boolean": (
            _raw_signed(a.signing_secret, {"app": a.app_id, "cus": alice.client_id, "exp": True}),
            401,
            "token_malformed",
        ),
        "no cus": (
            _raw_signed(a.signing_secret, {"app": a.app_id, "exp": exp}),
            401,
            "token_malformed",
        ),
        "too long": (alice.token + "A" * 2000, 401, "token_malformed"),
        "the secret key": (a.secret_key, 401, "token_malformed"),
        "signature not ASCII": (
            (alice.token.rsplit(".", 1)[0] + ".\xe9").encode("latin-1"),
            401,
            None,
        ),
        "payload not ASCII": (
            (alice.token[:10] + "\xe9" + alice.token[10:]).encode("latin-1"),
            401,
            None,
        ),
    }


def test_bad_tokens_are_refused_everywhere(world: World, clock: Clock) -> None:
    a, alice = world.a, world.a.customers["alice"]
    before = snapshot(world)
    last = fingerprint(world)
    failures = []
    for name, (token, status, code) in bad_tokens(world, clock).items():
        headers: dict[str, Any] = {"Authorization": a.app_id, TOKEN_HEADER: token}
        responses = {
            "refresh": refresh(world, alice.client_id, headers),
            "track": track(world, alice.client_id, headers),
            "auth": login(world, "alice", headers),
        }
        if status == 401:  # a token that is not valid at all is refused on every endpoint
            responses["products"] = world.http.get("/v1/customer/app/products", headers=headers)
        for endpoint, response in responses.items():
            try:
                error = assert_error(response, status, code)
                assert "token" in error["message"], error
                assert TOKEN_HEADER not in response.headers
            except AssertionError as exc:
                failures.append(f"{name} / {endpoint}: {str(exc).splitlines()[0][:200]}")
        assert fingerprint(world) == last, name
    assert_unchanged(world, before)
    assert not failures, "\n".join(failures)


def test_expired_token(world: World, clock: Clock) -> None:
    """Tokens live one hour by default; the server's clock is the test's clock."""
    a, alice = world.a, world.a.customers["alice"]
    clock.advance(seconds=3599)
    ok(refresh(world, alice.client_id, a.as_customer("alice")))
    clock.advance(seconds=1)
    before = snapshot(world)
    for response in (
        refresh(world, alice.client_id, a.as_customer("alice")),
        track(world, alice.client_id, a.as_customer("alice")),
        login(world, "alice", a.as_customer("alice")),
        world.http.get("/v1/customer/app/products", headers=a.as_customer("alice")),
    ):
        error = assert_error(response, 401, "token_expired")
        assert "expired" in error["message"]
    assert_unchanged(world, before)
    # A fresh token from the backend works again; a short one expires on time.
    minted = ok(
        world.http.post("/v1/customers/alice/tokens", json={"ttl_seconds": 60}, headers=a.api()),
        201,
    )
    assert minted["client_id"] == alice.client_id
    ok(refresh(world, alice.client_id, a.client(minted["token"])))
    clock.advance(seconds=60)
    assert_error(refresh(world, alice.client_id, a.client(minted["token"])), 401, "token_expired")


def test_missing_token_under_enforce(world: World) -> None:
    a, alice = world.a, world.a.customers["alice"]
    before = snapshot(world)
    for response in (
        refresh(world, alice.client_id, a.client()),
        track(world, alice.client_id, a.client()),
        login(world, "alice", a.client()),
        login(world, "somebody-new", a.client()),
    ):
        error = assert_error(response, 401, "customer_token_required")
        assert TOKEN_HEADER in error["message"]
    # The product list is the app's, public: it needs only the app id.
    ok(world.http.get("/v1/customer/app/products", headers=a.client()))
    assert_unchanged(world, before)


def test_missing_or_unknown_app_id(world: World) -> None:
    alice = world.a.customers["alice"]
    before = fingerprint(world)
    for authorization in (
        None,
        "",
        "app_doesnotexist",
        "Bearer app_doesnotexist",
        "app_" + "x" * 100,
        world.a.secret_key,  # the secret key is not the public id
        f"Bearer {world.a.secret_key}",
    ):
        headers = {TOKEN_HEADER: alice.token}
        if authorization is not None:
            headers["Authorization"] = authorization
        for response in (
            refresh(world, alice.client_id, headers),
            track(world, alice.client_id, headers),
            login(world, "alice", headers),
            login(world, ANONYMOUS_ID, {k: v for k, v in headers.items() if k != TOKEN_HEADER}),
            world.http.get("/v1/customer/app/products", headers=headers),
        ):
            assert_error(response, 401, "invalid_app_id")
    assert fingerprint(world) == before
    # Lenient on the scheme: `Bearer <app id>` names the app as well as the bare id.
    headers = {"Authorization": f"Bearer {world.a.app_id}", TOKEN_HEADER: alice.token}
    ok(refresh(world, alice.client_id, headers))


# --- anonymous logins ----------------------------------------------------------------------


def test_anonymous_login_without_token(world: World) -> None:
    a = world.a
    first = login(world, ANONYMOUS_ID, a.client())
    customer = ok(first)
    token = first.headers[TOKEN_HEADER]
    assert _payload(token)["cus"] == customer["client_id"]
    assert _payload(token)["app"] == a.app_id
    # The token works for that customer, and for nobody else.
    assert ok(refresh(world, customer["client_id"], a.client(token)))["usage_keys"]
    assert ok(track(world, customer["client_id"], a.client(token)))["success"] is True
    alice = a.customers["alice"]
    assert_error(refresh(world, alice.client_id, a.client(token)), 403, "forbidden")
    assert_error(track(world, alice.client_id, a.client(token)), 403, "forbidden")
    # Logging in again with the same identity is the same customer.
    again = login(world, ANONYMOUS_ID, a.client())
    assert ok(again)["client_id"] == customer["client_id"]
    assert TOKEN_HEADER in again.headers
    # An anonymous login with someone else's token is that someone's business: refused.
    response = login(world, "ab" * 16, a.as_customer("alice"))
    assert_error(response, 403, "forbidden")
    assert TOKEN_HEADER not in response.headers
    # The anonymous customer is app A's only: app B does not know it.
    listed = ok(world.http.get("/v1/customers", headers=world.b.api()))["customers"]
    assert ANONYMOUS_ID not in {c["external_id"] for c in listed}
    assert_verified(world.backend)


def test_non_anonymous_login_without_token(world: World) -> None:
    before = snapshot(world)
    for external_id in (
        "alice",
        "new-user",
        ANONYMOUS_ID.upper(),  # anonymous ids are lowercase hex
        ANONYMOUS_ID[:-1],  # 31 digits
        ANONYMOUS_ID + "0",  # 33 digits
        "g" + ANONYMOUS_ID[1:],  # not hex
        f" {ANONYMOUS_ID}",
    ):
        response = login(world, external_id, world.a.client())
        assert_error(response, 401, "customer_token_required")
        assert TOKEN_HEADER not in response.headers, external_id
    assert_unchanged(world, before)


def test_anonymous_looking_id_of_a_known_customer(world: World) -> None:
    """A customer the backend created (by minting a token) is not anonymous, whatever
    its id looks like: a token-less login cannot take it over."""
    a = world.a
    minted = ok(world.http.post(f"/v1/customers/{ANONYMOUS_ID}/tokens", headers=a.api()), 201)
    before = snapshot(world)
    response = login(world, ANONYMOUS_ID, a.client())
    error = assert_error(response, (401, 403))
    assert TOKEN_HEADER not in response.headers
    assert minted["client_id"] not in response.text
    assert error["code"] in ("customer_token_required", "forbidden")
    assert_unchanged(world, before)
    # With its token it logs in normally.
    assert (
        ok(login(world, ANONYMOUS_ID, a.client(minted["token"])))["client_id"]
        == minted["client_id"]
    )


def test_anonymous_logins_are_rate_limited_per_address(world: World) -> None:
    a = world.a
    ids = [f"{n:032x}" for n in range(1, ANONYMOUS_LOGINS_PER_MINUTE + 3)]
    for external_id in ids[:ANONYMOUS_LOGINS_PER_MINUTE]:
        ok(login(world, external_id, a.client()))
    before = snapshot(world)
    for external_id in ids[ANONYMOUS_LOGINS_PER_MINUTE:]:
        response = login(world, external_id, a.client())
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
        assert TOKEN_HEADER not in response.headers
    # Logging in again as a known anonymous customer is still an anonymous login.
    assert_error(login(world, ids[0], a.client()), 429, "rate_limited")
    assert_unchanged(world, before)
    # Token holders are not limited, nor is another address, nor another app.
    ok(login(world, "alice", a.as_customer("alice")))
    with TestClient(world.http.app, client=("203.0.113.9", 4711)) as elsewhere:
        ok(login(world, ids[-1], a.client(), http=elsewhere))
    ok(login(world, ids[-1], world.b.client()))


# --- the open policy ---------------------------------------------------------------------


def test_open_policy(world: World, clock: Clock) -> None:
    """`open` is the original protocol: no token needed, any client_id of the app may be
    named by whoever has the public app id. A token sent anyway must still be valid."""
    a, alice, bob = world.a, world.a.customers["alice"], world.a.customers["bob"]
    assert ok(world.http.get("/v1/app", headers=a.api()))["token_policy"] == "enforce"
    changed = ok(world.http.patch("/v1/app", json={"token_policy": "open"}, headers=a.api()))
    assert changed["token_policy"] == "open"

    assert ok(refresh(world, alice.client_id, a.client()))["usage_keys"]
    assert ok(track(world, alice.client_id, a.client()))["success"] is True
    assert credits(world, "alice") == 159
    new = login(world, "dave", a.client())
    assert ok(new)["client_id"]
    assert TOKEN_HEADER not in new.headers  # no token is minted for open logins
    assert ok(refresh(world, ok(new)["client_id"], a.client()))["usage_keys"]

    before = snapshot(world)
    # A token, if sent, must still be good and be the named customer's.
    assert_error(refresh(world, alice.client_id, a.as_customer("bob")), 403, "forbidden")
    assert_error(track(world, alice.client_id, a.as_customer("bob")), 403, "forbidden")
    assert_error(login(world, "alice", a.as_customer("bob")), 403, "forbidden")
    assert_error(refresh(world, alice.client_id, a.client("garbage")), 401, "token_malformed")
    assert_error(
        track(world, alice.client_id, a.client(world.b.customers["carol"].token)),
        401,
        "token_bad_signature",
    )
    # Open does not mean across apps: A's customers are unknown to app B's id, and
    # B (still enforcing) wants tokens.
    carol = world.b.customers["carol"]
    assert_error(refresh(world, carol.client_id, a.client()), 404, "customer_not_found")
    assert_error(track(world, carol.client_id, a.client()), 404, "customer_not_found")
    assert_error(refresh(world, carol.client_id, world.b.client()), 401, "customer_token_required")
    assert_error(refresh(world, alice.client_id, world.b.client(carol.token)), 403, "forbidden")
    assert_unchanged(world, before)

    clock.advance(hours=2)  # expired tokens stay refused under open too
    assert_error(refresh(world, bob.client_id, a.as_customer("bob")), 401, "token_expired")

    # Back to enforce: token-less requests are refused again at once.
    ok(world.http.patch("/v1/app", json={"token_policy": "enforce"}, headers=a.api()))
    assert_error(refresh(world, alice.client_id, a.client()), 401, "customer_token_required")
    assert_error(track(world, alice.client_id, a.client()), 401, "customer_token_required")
    # Only the backend (secret key) changes the policy; bad values are refused.
    assert_error(
        world.http.patch("/v1/app", json={"token_policy": "open"}, headers=a.client()),
        401,
        "secret_key_required",
    )
    assert_error(world.http.patch("/v1/app", json={"token_policy": "off"}, headers=a.api()), 400)
    assert ok(world.http.get("/v1/app", headers=a.api()))["token_policy"] == "enforce"
    assert_verified(world.backend)


# --- the server API's secret keys ------------------------------------------------------------


def test_secret_key_required(world: World) -> None:
    a = world.a
    before = fingerprint(world)
    requests = [
        ("GET", "/v1/app", None),
        ("GET", "/v1/customers", None),
        ("GET", "/v1/customers/alice", None),
        ("GET", "/v1/ledger", None),
        ("GET", "/v1/usage_events", None),
        ("POST", "/v1/customers/alice/track", {"id": "credits", "value": 1}),
        ("POST", "/v1/customers/alice/grants", {"product_id": "pro"}),
        ("POST", "/v1/customers/alice/tokens", None),
        ("PATCH", "/v1/app", {"token_policy": "open"}),
        ("POST", "/v1/secret_keys", None),
    ]
    for authorization in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic c2tfeHl6Og==",
        "Bearer sk_wrong",
        "Bearer " + "x" * 300,
        a.app_id,
        f"Bearer {a.app_id}",
        f"Bearer {a.customers['alice'].token}",
        a.secret_key,  # no scheme
        f"Token {a.secret_key}",
        f"Bearer {a.secret_key}x",
    ):
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path, body in requests:
            response = world.http.request(method, path, json=body, headers=headers)
            body = assert_error(response, 401)
            assert body["code"] in ("secret_key_required", "invalid_secret_key"), body
    assert fingerprint(world) == before
    assert ok(world.http.get("/v1/app", headers=a.api()))["token_policy"] == "enforce"


def test_revoked_secret_key(world: World) -> None:
    a = world.a
    created = ok(world.http.post("/v1/secret_keys", headers=a.api()), 201)
    second = {"Authorization": f"Bearer {created['secret_key']}"}
    assert ok(world.http.get("/v1/app", headers=second))["app_id"] == a.app_id
    listed = ok(world.http.get("/v1/secret_keys", headers=a.api()))["secret_keys"]
    assert created["secret_key"] not in json.dumps(listed)  # ids only, never the keys
    assert (
        world.http.delete(f"/v1/secret_keys/{created['key_id']}", headers=a.api()).status_code
        == 204
    )
    before = fingerprint(world)
    for method, path, body in (
        ("GET", "/v1/app", None),
        ("GET", "/v1/customers/alice", None),
        ("POST", "/v1/customers/alice/track", {"id": "credits", "value": 1}),
        ("POST", "/v1/customers/alice/tokens", None),
    ):
        response = world.http.request(method, path, json=body, headers=second)
        assert_error(response, 401, "invalid_secret_key")
    assert fingerprint(world) == before
    # The first key still works; B's keys cannot be revoked with A's key.
    ok(world.http.get("/v1/app", headers=a.api()))
    b_keys = ok(world.http.get("/v1/secret_keys", headers=world.b.api()))["secret_keys"]
    for key in b_keys:
        response = world.http.delete(f"/v1/secret_keys/{key['key_id']}", headers=a.api())
        assert_error(response, (400, 404))
    ok(world.http.get("/v1/app", headers=world.b.api()))


def test_a_key_names_only_its_own_apps_customers(world: World) -> None:
    """App A's key with B's external id `carol` names A's namespace: no data of B's
    carol is read or changed; B's internal ids and usage events are unknown to A."""
    a, b = world.a, world.b
    carol = b.customers["carol"]
    b_event = ok(
        world.http.post(
            "/v1/customers/carol/track", json={"id": "credits", "value": 4}, headers=b.api()
        )
    )
    b_before = {k: v for k, v in snapshot(world).items() if k.startswith("B/")}
    b_secrets = [carol.client_id, *carol.sources.values(), b_event["usage_event_id"], b.app_id]

    reads = [
        world.http.get("/v1/customers/carol", headers=a.api()),
        world.http.get(f"/v1/customers/{carol.client_id}", headers=a.api()),
        world.http.get("/v1/usage_events?customer=carol", headers=a.api()),
        world.http.get("/v1/ledger?customer=carol", headers=a.api()),
        world.http.post(
            "/v1/customers/carol/check", json={"id": "credits", "value": 1}, headers=a.api()
        ),
    ]
    for response in reads:
        assert_error(response, 404, "customer_not_found")
    reversal = world.http.post(
        f"/v1/usage_events/{b_event['usage_event_id']}/reversals", headers=a.api()
    )
    assert_error(reversal, 404, "usage_event_not_found")
    a_pages = [
        world.http.get("/v1/customers", headers=a.api()),
        world.http.get("/v1/ledger", headers=a.api()),
        world.http.get("/v1/usage_events", headers=a.api()),
        world.http.get("/v1/usage_events?id=credits", headers=a.api()),
    ]
    for response in [*reads, reversal, *a_pages]:
        text = (
            response.text.replace(b_event["usage_event_id"], "")
            if response is reversal
            else response.text
        )
        for secret in b_secrets:  # (the reversal's refusal echoes the id it was given)
            assert secret not in text, (response.request.url, secret)

    # Acting on "carol" with A's key acts on A's own (new) carol, never on B's.
    tracked = ok(
        world.http.post(
            "/v1/customers/carol/track", json={"id": "credits", "value": 2}, headers=a.api()
        )
    )
    assert tracked["client_id"] != carol.client_id and tracked["remaining"] == 98
    spend_b = world.http.post(
        "/v1/customers/alice/track",
        json={"id": "credits", "value": 1, "access_source_id": carol.sources["welcome"]},
        headers=a.api(),
    )
    assert ok(spend_b)["error"] == "unknown_access_source"
    granted = ok(
        world.http.post(
            "/v1/customers/carol/grants", json={"product_id": "pack_50"}, headers=a.api()
        ),
        201,
    )
    assert granted["client_id"] == tracked["client_id"]
    minted = ok(world.http.post("/v1/customers/carol/tokens", headers=a.api()), 201)
    assert minted["client_id"] == tracked["client_id"]
    # That token is A's: app B refuses it, and it cannot act for B's carol.
    assert_error(refresh(world, carol.client_id, b.client(minted["token"])), 401)
    assert_error(refresh(world, carol.client_id, a.client(minted["token"])), 403, "forbidden")

    b_after = {k: v for k, v in snapshot(world).items() if k.startswith("B/")}
    assert b_after == b_before
    assert_verified(world.backend)
