"""The client protocol's wire contract, decoded as strictly as the published SDK does.

docs/concepts/client-protocol.md#decoding-rules-we-keep: the mobile SDK decodes with hard
casts, so a required field that is absent, null or of another JSON type (`5.0` for an
integer, `"true"` for a bool) crashes the client. This test talks to a real server
over HTTP, parses the raw bytes itself (`json.loads`, no float ever accepted) and checks
every response object of the protocol field by field, then provokes errors of every
kind and checks that each body carries a string `message` (the SDK shows it).

The decoder collects every deviation with its path, so one run names them all.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from e2e.harness import TLS, TOKEN_HEADER, Server, Servers, mint_token

ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
INT_FIELDS = ("remaining", "requested", "consumed", "price")
# An integer field written with a fraction or an exponent: `"remaining": 5.0`, `1e3`.
FLOAT_LOOKING_INT = re.compile(
    r'"(' + "|".join(INT_FIELDS) + r')"\s*:\s*-?\d+(\.\d+([eE][+-]?\d+)?|[eE][+-]?\d+)'
)


# The reference marks `price`, `recurring_interval` and the store ids "or null", not
# `description`; the published SDK declares Product.description and
# ProductEntitlement.description as non-nullable `String`, so a null makes its
# getProducts throw.
NOT_NULLABLE_DESCRIPTION = "not nullable in the protocol: a null crashes the SDK's getProducts"


class FloatInAnswer(ValueError):
    pass


def _reject_float(text: str) -> Any:
    raise FloatInAnswer(f"a JSON number with a fraction or exponent: {text}")


def _reject_constant(text: str) -> Any:
    raise FloatInAnswer(f"a non-JSON constant: {text}")


class Decoder:
    """Checks answers against the protocol's object shapes; collects every deviation."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.seen: dict[str, int] = {}

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    # -- raw bytes -------------------------------------------------------------------

    def body(self, response: httpx.Response, what: str) -> Any:
        """The decoded JSON object of `response` (None, with a problem, if it is not one)."""
        where = f"{what} [{response.request.method} {response.request.url.path} -> "
        where += f"{response.status_code}]"
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            self.fail(where, f"content type {content_type!r}, not application/json")
        raw = response.content.decode("utf-8", errors="replace")
        match = FLOAT_LOOKING_INT.search(raw)
        if match:
            self.fail(where, f"integer field written as a float: {match.group(0)}")
        try:
            data = json.loads(
                response.content, parse_float=_reject_float, parse_constant=_reject_constant
            )
        except (FloatInAnswer, ValueError) as exc:
            self.fail(where, f"not strictly decodable JSON: {exc}; body {raw[:300]!r}")
            return None
        if not isinstance(data, dict):
            self.fail(where, f"expected a JSON object, got {type(data).__name__}")
            return None
        return data

    # -- fields ----------------------------------------------------------------------

    def _get(self, obj: dict[str, Any], key: str, path: str, *, required: bool) -> Any:
        if key not in obj:
            if required:
                self.fail(f"{path}.{key}", "required field is absent")
            return None
        value = obj[key]
        if value is None and required:
            self.fail(f"{path}.{key}", "required field is null")
        return value

    def string(self, obj: dict[str, Any], key: str, path: str, why: str = "") -> str | None:
        problems = len(self.problems)
        value = self._get(obj, key, path, required=True)
        if why and len(self.problems) > problems:
            self.problems[-1] += f" ({why})"
        if value is not None and type(value) is not str:
            self.fail(f"{path}.{key}", f"expected a string, got {type(value).__name__} {value!r}")
        return value if type(value) is str else None

    def opt_string(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = self._get(obj, key, path, required=False)
        if value is not None and type(value) is not str:
            self.fail(f"{path}.{key}", f"expected a string or null, got {value!r}")
        return value if type(value) is str else None

    def integer(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = self._get(obj, key, path, required=True)
        if value is not None and type(value) is not int:
            self.fail(
                f"{path}.{key}", f"expected a JSON integer, got {type(value).__name__} {value!r}"
            )
        return value if type(value) is int else None

    def opt_integer(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = self._get(obj, key, path, required=False)
        if value is not None and type(value) is not int:
            self.fail(f"{path}.{key}", f"expected a JSON integer or null, got {value!r}")
        return value if type(value) is int else None

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> bool | None:
        value = self._get(obj, key, path, required=True)
        if value is not None and type(value) is not bool:
            self.fail(
                f"{path}.{key}", f"expected a JSON bool, got {type(value).__name__} {value!r}"
            )
        return value if type(value) is bool else None

    def timestamp(self, obj: dict[str, Any], key: str, path: str, *, required: bool) -> None:
        value = self._get(obj, key, path, required=required)
        if value is None:
            return
        if type(value) is not str or not ISO_8601.match(value):
            self.fail(f"{path}.{key}", f"expected an ISO-8601 timestamp string, got {value!r}")
            return
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            self.fail(f"{path}.{key}", f"does not parse as ISO-8601: {value!r} ({exc})")
            return
        if moment.tzinfo is None:
            self.fail(f"{path}.{key}", f"timestamp without a zone: {value!r}")

    def obj_list(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        item: Callable[[dict[str, Any], str], None],
        *,
        required: bool,
    ) -> list[dict[str, Any]]:
        value = self._get(obj, key, path, required=required)
        if value is None:
            return []
        if type(value) is not list:
            self.fail(f"{path}.{key}", f"expected a list, got {type(value).__name__}")
            return []
        for index, element in enumerate(value):
            where = f"{path}.{key}[{index}]"
            if type(element) is not dict:
                self.fail(where, f"expected an object, got {type(element).__name__}")
                continue
            item(element, where)
        self.seen[key] = self.seen.get(key, 0) + len(value)
        return value

    # -- protocol objects ------------------------------------------------------------

    def customer(self, data: dict[str, Any], path: str = "Customer") -> None:
        self.string(data, "client_id", path)
        self.access_lists(data, path)

    def refresh(self, data: dict[str, Any], path: str = "Refresh") -> None:
        self.access_lists(data, path)

    def access_lists(self, data: dict[str, Any], path: str) -> None:
        # Each list may be absent (= empty); when present it is a list of objects.
        self.obj_list(data, "entitlements", path, self.entitlement, required=False)
        self.obj_list(data, "usage_keys", path, self.usage_key, required=False)
        self.obj_list(data, "subscriptions", path, self.subscription, required=False)
        self.obj_list(data, "add_ons", path, self.add_on, required=False)
        self.obj_list(data, "base_plans", path, self.base_plan, required=False)
        entries = [
            (e.get("entitlement_id"), e.get("access_source_id"))
            for e in data.get("entitlements") or []
            if isinstance(e, dict)
        ]
        if len(entries) != len(set(entries)):
            self.fail(f"{path}.entitlements", "more than one entry per (entitlement, source)")

    def entitlement(self, e: dict[str, Any], path: str) -> None:
        self.string(e, "entitlement_id", path)
        self.string(e, "access_source_id", path)
        self.string(e, "type", path)
        self.integer(e, "remaining", path)
        self.timestamp(e, "expires_at", path, required=False)
        if e.get("expires_at") is not None:
            self.seen["expires_at"] = self.seen.get("expires_at", 0) + 1

    def usage_key(self, k: dict[str, Any], path: str) -> None:
        self.string(k, "key_id", path)
        self.string(k, "name", path)
        self.integer(k, "remaining", path)

    def subscription(self, s: dict[str, Any], path: str) -> None:
        for key in ("access_source_id", "product_id", "product_name", "status", "provider"):
            self.string(s, key, path)
        for key in (
            "is_trial",
            "will_cancel_at_period_end",
            "can_cancel",
            "payment_method_attached",
        ):
            self.boolean(s, key, path)
        self.timestamp(s, "renews_at", path, required=False)
        self.timestamp(s, "expires_at", path, required=False)
        change = s.get("pending_change")
        if change is not None:
            if type(change) is not dict:
                self.fail(f"{path}.pending_change", f"expected an object or null, got {change!r}")
            else:
                self.pending_change(change, f"{path}.pending_change")

    def pending_change(self, c: dict[str, Any], path: str) -> None:
        for key in ("change_id", "type", "billing_mode", "status"):
            self.string(c, key, path)
        for key in ("from_product_id", "to_product_id"):
            self.string(c, key, path)
        self.timestamp(c, "effective_at", path, required=False)

    def add_on(self, a: dict[str, Any], path: str) -> None:
        for key in ("access_source_id", "product_id", "product_name", "status", "billing_type"):
            self.string(a, key, path)
        self.timestamp(a, "expires_at", path, required=False)
        self.timestamp(a, "renews_at", path, required=False)
        self.boolean(a, "can_cancel", path)

    def base_plan(self, b: dict[str, Any], path: str) -> None:
        self.string(b, "source_id", path)
        self.string(b, "status", path)
        self.string(b, "interval", path)
        self.opt_string(b, "product_id", path)
        self.opt_string(b, "product_name", path)
        self.timestamp(b, "period_end", path, required=False)

    def track_result(self, t: dict[str, Any], path: str = "TrackResult") -> None:
        success = self.boolean(t, "success", path)
        self.integer(t, "requested", path)
        consumed = self.integer(t, "consumed", path)
        self.integer(t, "remaining", path)
        self.string(t, "entitlement_id", path)
        self.opt_string(t, "access_source_id", path)
        error = self.opt_string(t, "error", path)
        if success is False and (consumed != 0 or not error):
            self.fail(path, f"a refusal must have consumed 0 and an error, got {t}")
        if success is True and error is not None:
            self.fail(path, f"a success must have error null, got {t}")

    def products(self, data: dict[str, Any], path: str = "Products") -> None:
        self.obj_list(data, "products", path, self.product, required=True)

    def product(self, p: dict[str, Any], path: str) -> None:
        self.string(p, "product_id", path)
        self.string(p, "name", path)
        self.string(p, "description", path, NOT_NULLABLE_DESCRIPTION)
        self.opt_integer(p, "price", path)
        self.string(p, "type", path)
        self.opt_string(p, "recurring_interval", path)
        self.opt_string(p, "app_store_product_id", path)
        self.opt_string(p, "play_store_product_id", path)
        self.obj_list(p, "entitlements", path, self.product_entitlement, required=True)

    def product_entitlement(self, e: dict[str, Any], path: str) -> None:
        self.string(e, "entitlement_id", path)
        self.string(e, "name", path)
        self.string(e, "description", path, NOT_NULLABLE_DESCRIPTION)

    # -- purchases -------------------------------------------------------------------

    def nested(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        item: Callable[[dict[str, Any], str], None],
    ) -> bool:
        """An optional object member: absent, or an object of the given shape."""
        if key not in obj:
            return False
        value = obj[key]
        if type(value) is not dict:
            self.fail(f"{path}.{key}", f"expected an object, got {value!r}")
            return False
        item(value, f"{path}.{key}")
        self.seen[key] = self.seen.get(key, 0) + 1
        return True

    def start_purchase(self, data: dict[str, Any], path: str = "StartPurchase") -> None:
        for key in ("purchase_method", "product_id", "product_type"):
            self.string(data, key, path)
        present = [
            self.nested(data, "checkout", path, self.checkout),
            self.nested(data, "payment_sheet", path, self.payment_sheet),
            self.nested(data, "setup", path, self.setup),
            self.nested(data, "subscription", path, self.direct_subscription),
        ]
        if sum(present) > 1:
            self.fail(path, "more than one of checkout, payment_sheet, setup, subscription")

    def checkout(self, c: dict[str, Any], path: str) -> None:
        self.string(c, "session_id", path)
        self.string(c, "checkout_url", path)

    def payment_sheet(self, p: dict[str, Any], path: str) -> None:
        self.string(p, "customer_id", path)
        self.string(p, "customer_ephemeral_key_secret", path)
        for key in (
            "payment_intent_client_secret",
            "subscription_id",
            "setup_intent_client_secret",
        ):
            self.opt_string(p, key, path)

    def setup(self, s: dict[str, Any], path: str) -> None:
        for key in (
            "customer_id",
            "ephemeral_key",
            "setup_intent_id",
            "setup_intent_client_secret",
        ):
            self.string(s, key, path)

    def direct_subscription(self, s: dict[str, Any], path: str) -> None:
        self.string(s, "subscription_id", path)
        self.string(s, "status", path)
        self.timestamp(s, "trial_end", path, required=False)

    def cancel(self, c: dict[str, Any], path: str = "Cancel") -> None:
        self.boolean(c, "success", path)
        self.string(c, "status", path)
        self.boolean(c, "will_cancel_at_period_end", path)
        self.timestamp(c, "cancels_at", path, required=False)
        self.opt_string(c, "message", path)

    def uncancel(self, u: dict[str, Any], path: str = "Uncancel") -> None:
        self.boolean(u, "success", path)

    def change_plan(self, c: dict[str, Any], path: str = "ChangePlan") -> None:
        self.boolean(c, "success", path)
        for key in ("change_type", "billing_mode", "status"):
            self.string(c, key, path)
        self.timestamp(c, "effective_at", path, required=True)
        self.opt_string(c, "message", path)

    def attach(self, a: dict[str, Any], path: str = "AttachPaymentMethod") -> None:
        self.string(a, "mode", path)
        self.nested(a, "checkout", path, self.checkout)
        self.nested(a, "payment_sheet", path, self.payment_sheet)

    def error(self, response: httpx.Response, what: str) -> None:
        """A non-2xx answer: a JSON object with a string `message` (and `code`)."""
        path = f"error {what} [{response.status_code}]"
        if response.is_success:
            self.fail(path, f"expected an error status, got {response.status_code}")
            return
        data = self.body(response, f"error {what}")
        if data is None:
            return
        message = self.string(data, "message", path)
        if message is not None and not message.strip():
            self.fail(f"{path}.message", "empty message")
        self.string(data, "code", path)
        self.seen["errors"] = self.seen.get("errors", 0) + 1


def _expect(decoder: Decoder, response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        decoder.fail(
            what, f"expected status {status}, got {response.status_code}: {response.text[:300]}"
        )
    return decoder.body(response, what)


def test_client_protocol_answers_decode_strictly(servers: Servers) -> None:
    server = servers.start()
    decoder = Decoder()
    external_id = "contract-user"
    minted = mint_token(server, external_id)
    client_id = minted["client_id"]
    with server.api() as api:
        # Fill every list of the Customer object: two subscriptions (free by default,
        # pro) granting the same entitlement, a pack that expires, an add-on.
        for product in ("pro", "pack_50", "boost"):
            granted = api.post(f"/v1/customers/{external_id}/grants", json={"product_id": product})
            assert granted.status_code == 201, granted.text

    with server.client(minted["token"]) as http:
        customer = _expect(
            decoder, http.post("/v1/client/auth", json={"client_id": external_id}), 200, "Customer"
        )
        if customer is not None:
            decoder.customer(customer)
            assert customer["client_id"] == client_id
        refresh = http.post("/v1/customer/refresh_entitlements", json={"client_id": client_id})
        state = _expect(decoder, refresh, 200, "Refresh")
        if state is not None:
            decoder.refresh(state)

        monthly = [
            e
            for e in (customer or {}).get("entitlements", [])
            if e["entitlement_id"] == "monthly_credits"
        ]
        assert len(monthly) == 2, "one monthly_credits entry per source (free and pro)"
        tracks = [
            ("monthly_credits", 1, monthly[0]["access_source_id"], True),
            ("credits", 1, None, True),
            ("credits", 10**9, None, False),
            ("no_such_thing", 1, None, False),
            ("export_hd", 1, None, False),
        ]
        for id, value, source, success in tracks:
            body = {
                "access_source_id": source,
                "entitlement_id": id,
                "client_id": client_id,
                "value": value,
            }
            answer = _expect(
                decoder, http.post("/v1/customer/track", json=body), 200, f"TrackResult {id}"
            )
            if answer is not None:
                decoder.track_result(answer, f"TrackResult {id}")
                assert answer["success"] is success, answer
        key = {"Idempotency-Key": "contract-replay"}
        body = {
            "access_source_id": None,
            "entitlement_id": "credits",
            "client_id": client_id,
            "value": 2,
        }
        first = _expect(
            decoder, http.post("/v1/customer/track", json=body, headers=key), 200, "TrackResult"
        )
        replay = _expect(
            decoder, http.post("/v1/customer/track", json=body, headers=key), 200, "replay"
        )
        if replay is not None:
            decoder.track_result(replay, "TrackResult (replay)")
            assert replay == first

        products = _expect(decoder, http.get("/v1/customer/app/products"), 200, "Products")
        if products is not None:
            decoder.products(products)

    # An anonymous login without a token (allowed under `enforce`) gets a token back.
    with server.client() as bare:
        anonymous = bare.post("/v1/client/auth", json={"client_id": secrets.token_hex(16)})
        data = _expect(decoder, anonymous, 200, "Customer (anonymous)")
        if data is not None:
            decoder.customer(data, "Customer (anonymous)")
            token = anonymous.headers.get(TOKEN_HEADER)
            assert token, "an anonymous login answers with a customer token header"
            again = bare.post(
                "/v1/customer/refresh_entitlements",
                json={"client_id": data["client_id"]},
                headers={TOKEN_HEADER: token},
            )
            refreshed = _expect(decoder, again, 200, "Refresh (anonymous)")
            if refreshed is not None:
                decoder.refresh(refreshed, "Refresh (anonymous)")

    _provoke_errors(server, decoder, minted["token"], client_id)
    _provoke_internal_error(server, decoder, minted["token"], client_id)

    # Every object kind was actually exercised.
    for kind in (
        "entitlements",
        "usage_keys",
        "subscriptions",
        "add_ons",
        "base_plans",
        "products",
    ):
        assert decoder.seen.get(kind, 0) > 0, f"no {kind} were decoded: {decoder.seen}"
    assert decoder.seen.get("expires_at", 0) > 0, "no entitlement with an expiry was decoded"
    assert decoder.seen["errors"] >= 31, decoder.seen
    assert not decoder.problems, "client protocol contract deviations:\n" + "\n".join(
        decoder.problems
    )


def _provoke_errors(server: Server, decoder: Decoder, token: str, client_id: str) -> None:
    """Errors of every kind, each with its expected status and a string `message`."""
    other = mint_token(server, "contract-other")["client_id"]
    app = {"Authorization": server.app_id}
    track = {
        "access_source_id": None,
        "entitlement_id": "credits",
        "client_id": client_id,
        "value": 1,
    }
    too_large = b'{"a": "' + b"x" * 200_000 + b'"}'
    purchase = {"product_id": "pro", "purchase_method": "hosted_checkout", "customer_id": client_id}
    cancel = {"client_id": client_id, "source_id": "src_x", "cancel_mode": "period_end"}
    TRACK, AUTH, REFRESH = (
        "/v1/customer/track",
        "/v1/client/auth",
        "/v1/customer/refresh_entitlements",
    )
    with (
        server.client(token) as http,
        httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as raw,
        server.api() as api,
    ):
        cases: list[tuple[str, int, httpx.Response]] = [
            ("no Authorization", 401, raw.post(AUTH, json={"client_id": "x"})),
            (
                "unknown app id",
                401,
                raw.post(AUTH, json={"client_id": "x"}, headers={"Authorization": "app_nope"}),
            ),
            ("no customer token", 401, raw.post(TRACK, json=track, headers=app)),
            (
                "login without token",
                401,
                raw.post(AUTH, json={"client_id": "contract-user"}, headers=app),
            ),
            (
                "garbage token",
                401,
                raw.post(TRACK, json=track, headers={**app, TOKEN_HEADER: "not-a-token"}),
            ),
            (
                "tampered token",
                401,
                raw.post(TRACK, json=track, headers={**app, TOKEN_HEADER: token[:-4] + "AAAA"}),
            ),
            ("another customer's refresh", 403, http.post(REFRESH, json={"client_id": other})),
            ("another customer's track", 403, http.post(TRACK, json={**track, "client_id": other})),
            (
                "login as another customer",
                403,
                http.post(AUTH, json={"client_id": "contract-other"}),
            ),
            ("value 5.0", 400, http.post(TRACK, json={**track, "value": 5.0})),
            ("value '5'", 400, http.post(TRACK, json={**track, "value": "5"})),
            ("value true", 400, http.post(TRACK, json={**track, "value": True})),
            ("value 0", 400, http.post(TRACK, json={**track, "value": 0})),
            ("value -1", 400, http.post(TRACK, json={**track, "value": -1})),
            ("value 2**53", 400, http.post(TRACK, json={**track, "value": 2**53})),
            ("no entitlement_id", 400, http.post(TRACK, json={"client_id": client_id, "value": 1})),
            ("body not JSON", 400, http.post(TRACK, content=b"{not json")),
            ("body a list", 400, http.post(TRACK, json=[track])),
            ("idempotency key reused", 409, _reuse_key(http, track)),
            (
                "start purchase, no provider configured",
                409,
                http.post("/v1/customer/purchase/start_purchase", json=purchase),
            ),
            (
                "cancel an unknown subscription",
                404,
                http.post("/v1/customer/purchase/subscription/cancel", json=cancel),
            ),
            ("unknown path", 404, http.get("/v1/customer/nothing-here")),
            ("wrong method", 405, http.get(AUTH)),
            ("body too large", 413, http.post(TRACK, content=too_large)),
            ("server API without key", 401, raw.get("/v1/app")),
            (
                "server API bad key",
                401,
                raw.get("/v1/app", headers={"Authorization": "Bearer sk_x"}),
            ),
            ("unknown customer", 404, api.get("/v1/customers/nobody-here")),
            (
                "unknown product",
                404,
                api.post("/v1/customers/contract-user/grants", json={"product_id": "nope"}),
            ),
            (
                "invalid catalog",
                400,
                api.post("/v1/catalog/validate", json={"entitlements": [{"id": "Bad Id"}]}),
            ),
            ("unknown usage event", 404, api.post("/v1/usage_events/use_nope/reversals")),
            ("limit 0", 400, api.get("/v1/usage_events", params={"limit": 0})),
        ]
        # Anonymous logins without a token are rate limited per address.
        for _ in range(60):
            response = raw.post(AUTH, json={"client_id": secrets.token_hex(16)}, headers=app)
            if response.status_code != 200:
                cases.append(("anonymous login rate limit", 429, response))
                if not response.headers.get("Retry-After"):
                    decoder.fail("anonymous login rate limit", "a 429 without Retry-After")
                break
        else:
            decoder.fail("anonymous login rate limit", "60 anonymous logins were all let in")
    for what, status, response in cases:
        if response.status_code != status:
            decoder.fail(f"error {what}", f"expected status {status}, got {response.status_code}")
        decoder.error(response, what)


def _provoke_internal_error(server: Server, decoder: Decoder, token: str, client_id: str) -> None:
    """A failure inside the server (here: a table gone missing) is a 500 that still
    carries a JSON `message`, not a plain-text page the SDK cannot read."""
    rename = "ALTER TABLE usage_events RENAME TO {}"
    with _database(server.database_url) as db:
        db.execute(rename.format("usage_events_gone"))
        try:
            with server.client(token) as http:
                body = {
                    "access_source_id": None,
                    "entitlement_id": "credits",
                    "client_id": client_id,
                    "value": 1,
                }
                response = http.post("/v1/customer/track", json=body)
        finally:
            db.execute("ALTER TABLE usage_events_gone RENAME TO usage_events")
    if response.status_code != 500:
        decoder.fail("error internal", f"expected status 500, got {response.status_code}")
    decoder.error(response, "internal")


@contextmanager
def _database(url: str) -> Iterator[Any]:
    """An autocommit connection to the server's database, from the test."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        yield pg


def _reuse_key(http: httpx.Client, track: dict[str, Any]) -> httpx.Response:
    key = {"Idempotency-Key": "contract-reuse"}
    http.post("/v1/customer/track", json=track, headers=key)
    return http.post("/v1/customer/track", json={**track, "value": 2}, headers=key)


VALID_TRACK = {
    "success": True,
    "requested": 1,
    "consumed": 1,
    "remaining": 5,
    "entitlement_id": "credits",
    "access_source_id": None,
    "error": None,
}


def _fake(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"content-type": "application/json"},
        request=httpx.Request("POST", "http://test/v1/customer/track"),
    )


@pytest.mark.parametrize(
    ("raw", "deviation"),
    [
        (b'{"remaining": 5.0}', "float"),
        (b'{"remaining": 5e0}', "float"),
        (b'{"success": "true"}', "expected a JSON bool"),
        (b'{"success": 1}', "expected a JSON bool"),
        (b'{"requested": true}', "expected a JSON integer"),
        (b'{"requested": null}', "required field is null"),
        (b'{"entitlement_id": 7}', "expected a string"),
        (b'{"error": false}', "expected a string or null"),
    ],
)
def test_the_decoder_itself_rejects_deviations(raw: bytes, deviation: str) -> None:
    # The decoder must not be vacuous: each broken answer is reported.
    # Splice the broken field into a valid answer as text (json.dumps would respell 5.0).
    key = raw.decode().split('"')[1]
    fields = [f'"{k}": {json.dumps(v)}' for k, v in VALID_TRACK.items() if k != key]
    body = ("{" + ", ".join([*fields, raw.decode()[1:-1]]) + "}").encode()
    decoder = Decoder()
    data = decoder.body(_fake(body), "track")
    if data is not None:
        decoder.track_result(data)
    assert any(deviation in p for p in decoder.problems), decoder.problems

    valid = Decoder()
    valid.track_result(valid.body(_fake(json.dumps(VALID_TRACK).encode()), "track"))
    assert valid.problems == []


@pytest.mark.parametrize(
    ("raw", "deviation"),
    [
        (b'{"code": "x"}', "message: required field is absent"),
        (b'{"code": "x", "message": 5}', "expected a string"),
        (b'{"code": "x", "message": null}', "required field is null"),
        (b'"just text"', "expected a JSON object"),
        (b"Internal Server Error", "not strictly decodable JSON"),
    ],
)
def test_the_decoder_itself_rejects_bad_error_bodies(raw: bytes, deviation: str) -> None:
    decoder = Decoder()
    decoder.error(_fake(raw, 500), "fake")
    assert any(deviation in p for p in decoder.problems), decoder.problems


def test_the_decoder_itself_rejects_bad_timestamps() -> None:
    decoder = Decoder()
    for bad in ("2026-11-25 10:00:00", "2026-11-25T10:00:00", "yesterday", 1764064800):
        decoder.timestamp({"t": bad}, "t", "x", required=False)
    assert len(decoder.problems) == 4, decoder.problems
    decoder.timestamp({"t": "2026-11-25T10:00:00Z"}, "t", "x", required=True)
    decoder.timestamp({"t": "2026-11-25T10:00:00.123456+00:00"}, "t", "x", required=True)
    decoder.timestamp({"t": None}, "t", "x", required=False)
    assert len(decoder.problems) == 4, decoder.problems


def test_purchase_answers_decode_strictly(servers: Servers) -> None:
    """Every purchase endpoint's answer, from a sandbox server, in the protocol's shapes."""
    server = servers.start(sandbox=True)
    decoder = Decoder()
    minted = mint_token(server, "contract-buyer")
    client_id = minted["client_id"]
    start = "/v1/customer/purchase/start_purchase"
    with server.client(minted["token"]) as http:

        def started(what: str, **body: Any) -> Any:
            answer = _expect(
                decoder, http.post(start, json={"customer_id": client_id, **body}), 200, what
            )
            if answer is not None:
                decoder.start_purchase(answer, what)
            return answer

        started("StartPurchase checkout", product_id="pack_50", purchase_method="hosted_checkout")
        sheet = started(
            "StartPurchase payment sheet", product_id="pack_50", purchase_method="payment_sheet"
        )
        setup = started(
            "StartPurchase trial setup",
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="setup_intent",
        )
        assert sheet and "payment_sheet" in sheet and setup and "setup" in setup
        direct = started(
            "StartPurchase direct trial",
            product_id="trial_plan",
            purchase_method="payment_sheet",
            trial_payment_method_behavior="direct",
        )
        assert direct and direct["subscription"]["status"] == "trialing", direct
        source = direct["subscription"]["subscription_id"]
        attach = _expect(
            decoder,
            http.post(
                "/v1/customer/purchase/subscriptions/attach/payment_method",
                json={"client_id": client_id, "access_source_id": source, "mode": "payment_sheet"},
            ),
            200,
            "AttachPaymentMethod",
        )
        if attach is not None:
            decoder.attach(attach)
        change = _expect(
            decoder,
            http.post(
                "/v1/customer/purchase/subscription/change_plan",
                json={"client_id": client_id, "source_id": source, "new_product_id": "pro"},
            ),
            200,
            "ChangePlan",
        )
        if change is not None:
            decoder.change_plan(change)
        cancel = _expect(
            decoder,
            http.post(
                "/v1/customer/purchase/subscription/cancel",
                json={"client_id": client_id, "source_id": source, "cancel_mode": "period_end"},
            ),
            200,
            "Cancel",
        )
        if cancel is not None:
            decoder.cancel(cancel)
        refreshed = _expect(
            decoder,
            http.post("/v1/customer/refresh_entitlements", json={"client_id": client_id}),
            200,
            "Refresh (subscribed)",
        )
        if refreshed is not None:
            decoder.refresh(refreshed, "Refresh (subscribed)")
        uncancel = _expect(
            decoder,
            http.post(
                "/v1/customer/purchase/subscription/uncancel",
                json={"client_id": client_id, "source_id": source},
            ),
            200,
            "Uncancel",
        )
        if uncancel is not None:
            decoder.uncancel(uncancel)
        for what, body in (
            ("unknown product", {"product_id": "nope", "purchase_method": "hosted_checkout"}),
            ("already subscribed", {"product_id": "pro", "purchase_method": "hosted_checkout"}),
        ):
            response = http.post(start, json={"customer_id": client_id, **body})
            decoder.error(response, what)
    for kind in ("checkout", "payment_sheet", "setup", "subscription"):
        assert decoder.seen.get(kind, 0) > 0, f"no {kind} was decoded: {decoder.seen}"
    assert decoder.seen.get("subscriptions", 0) > 0
    assert not decoder.problems, "purchase contract deviations:\n" + "\n".join(decoder.problems)
