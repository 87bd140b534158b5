"""A stateful test over HTTP: logins, grants, tracks, checks, reversals and token misuse,
interleaved at random by hypothesis, against a plain reference model.

The storage-level stateful test (tests/integration/test_stateful_model.py) covers the
rules of time (resets, expiry, rollover). This one covers the surfaces: the client
protocol (public app id and customer tokens) and the server API (secret key), as a
client sees them, in the app's own order. Grants here never expire or reset, so the
model is a balance per (customer, entitlement): a usage key draws its entitlements in
declared order, a reversal gives back the last drawn first.

Rules: a customer logs in (a token minted by the backend, or anonymously, receiving a
token); the backend grants an amount; tracks over either surface (an entitlement, the
usage key, a boolean, an unknown id; with or without an idempotency key); a key
replayed (same answer, nothing charged) or reused for another value (409); a check (a
dry run, compared and changing nothing); a reversal, whole or partial (never more than
was consumed); and misuse: another customer's token, a tampered one, none, an expired
one, an unknown app id, a secret key where an app id goes and the reverse. Each misuse
is refused with its status and code, and changes nothing. After every step each
customer's balances, as the server API shows them, equal the model's. Runs on SQLite
and PostgreSQL, a fresh app per example; REVENIPE_RELIABILITY_STATEFUL_EXAMPLES (CI: 6)
and REVENIPE_RELIABILITY_STATEFUL_STEPS (CI: 20) for more.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import revenipe
from reliability.conftest import size
from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings

from support import DEMO_CATALOG, Clock, assert_verified

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLES = size("STATEFUL_EXAMPLES", 6)
STEPS = size("STATEFUL_STEPS", 20)
TOKEN_HEADER = "X-Revenipe-Customer-Token"
# DEMO_CATALOG, as the model reads it: the free tier gives 100 monthly credits.
USAGE_KEY = ("credits", ("monthly_credits", "bonus_credits", "purchased_credits"))
METERED = USAGE_KEY[1]
DEFAULT_GRANT = {"monthly_credits": 100}


@dataclass
class Customer:
    external_id: str
    client_id: str
    token: str | None
    balances: dict[str, int] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)


@dataclass
class Event:
    """A usage event the server API told us the id of: who, what it drew, reversed."""

    customer: Customer
    event_id: str
    draws: list[tuple[str, int]]
    """(entitlement, units) in the order drawn; one entry per entitlement."""
    reversed: int = 0
    reversed_by: dict[str, int] = field(default_factory=dict)

    @property
    def consumed(self) -> int:
        return sum(amount for _, amount in self.draws)


@dataclass
class Sent:
    """A keyed track and its answer, for replays."""

    customer: Customer
    key: str
    surface: str
    tracked_id: str
    value: int
    answer: dict[str, Any]


def _expected(customer: Customer, tracked_id: str, value: int) -> tuple[dict[str, Any], list]:
    """The model's answer to a track, and the draws it would make."""
    if tracked_id == "export_hd":
        return _refusal(tracked_id, value, 0, "not_metered"), []
    if tracked_id == USAGE_KEY[0]:
        entitlements: tuple[str, ...] = USAGE_KEY[1]
    elif tracked_id in METERED:
        entitlements = (tracked_id,)
    else:
        return _refusal(tracked_id, value, 0, "unknown_entitlement"), []
    available = sum(customer.balances.get(e, 0) for e in entitlements)
    if not any(e in customer.granted for e in entitlements):
        return _refusal(tracked_id, value, 0, "no_access"), []
    if available < value:
        return _refusal(tracked_id, value, available, "insufficient_balance"), []
    draws, left = [], value
    for entitlement in entitlements:
        take = min(left, customer.balances.get(entitlement, 0))
        if take:
            draws.append((entitlement, take))
            left -= take
    answer = {
        "success": True,
        "requested": value,
        "consumed": value,
        "remaining": available - value,
        "entitlement_id": tracked_id,
        "access_source_id": None,
        "error": None,
    }
    return answer, draws


def _refusal(tracked_id: str, value: int, remaining: int, error: str) -> dict[str, Any]:
    return {
        "success": False,
        "requested": value,
        "consumed": 0,
        "remaining": remaining,
        "entitlement_id": tracked_id,
        "access_source_id": None,
        "error": error,
    }


def _error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body


class HttpModel(RuleBasedStateMachine):
    backend: revenipe.Backend
    clock: Clock

    customers = Bundle("customers")
    events = Bundle("events")
    keyed = Bundle("keyed")

    def __init__(self) -> None:
        super().__init__()
        created = self.backend.create_app("stateful http", revenipe.load_catalog(DEMO_CATALOG))
        self.app_id = created.app.id
        self.secret_key = created.secret_key
        asgi = create_app(
            ServerSettings(database_url=self.backend.context.db.url),
            context=self.backend.context,
        )
        self.http = TestClient(asgi, raise_server_exceptions=False)
        self.known: list[Customer] = []

    def teardown(self) -> None:
        self.http.close()
        assert_verified(self.backend, self.app_id)

    # --- helpers ------------------------------------------------------------------------

    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    def client(self, token: str | None) -> dict[str, str]:
        headers = {"Authorization": self.app_id}
        if token is not None:
            headers[TOKEN_HEADER] = token
        return headers

    def send_track(
        self, customer: Customer, surface: str, tracked_id: str, value: int, key: str | None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        if surface == "protocol":
            body = {
                "access_source_id": None,
                "entitlement_id": tracked_id,
                "client_id": customer.client_id,
                "value": value,
            }
            return self.http.post(
                "/v1/customer/track", json=body, headers={**self.client(customer.token), **headers}
            )
        return self.http.post(
            f"/v1/customers/{customer.external_id}/track",
            json={"id": tracked_id, "value": value},
            headers={**self.api(), **headers},
        )

    def track_as_modelled(
        self, customer: Customer, surface: str, tracked_id: str, value: int, key: str | None
    ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        """Track, check the answer against the model, apply it to the model."""
        expected, draws = _expected(customer, tracked_id, value)
        response = self.send_track(customer, surface, tracked_id, value, key)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert {k: body[k] for k in expected} == expected
        for entitlement, amount in draws:
            customer.balances[entitlement] -= amount
        return body, draws

    def track_one_with(self, customer: Customer, token: str | None) -> httpx.Response:
        """One credit for `customer` over the client protocol, with `token` (or none)."""
        as_sent = Customer(customer.external_id, customer.client_id, token)
        return self.send_track(as_sent, "protocol", "credits", 1, None)

    def _new(self, external_id: str, client_id: str, token: str) -> Customer:
        customer = Customer(external_id, client_id, token, dict(DEFAULT_GRANT))
        customer.granted.update(DEFAULT_GRANT)
        self.known.append(customer)
        return customer

    # --- logins -------------------------------------------------------------------------

    @rule(target=customers)
    def login_with_token(self) -> Customer:
        external_id = f"user-{uuid.uuid4().hex[:8]}"
        minted = self.http.post(f"/v1/customers/{external_id}/tokens", headers=self.api())
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        login = self.http.post(
            "/v1/client/auth", json={"client_id": external_id}, headers=self.client(token)
        )
        assert login.status_code == 200, login.text
        assert login.json()["client_id"] == minted.json()["client_id"]
        return self._new(external_id, minted.json()["client_id"], token)

    @rule(target=customers)
    def login_anonymously(self) -> Customer:
        external_id = uuid.uuid4().hex
        login = self.http.post(
            "/v1/client/auth", json={"client_id": external_id}, headers=self.client(None)
        )
        assert login.status_code == 200, login.text
        token = login.headers[TOKEN_HEADER]
        return self._new(external_id, login.json()["client_id"], token)

    @rule(customer=customers)
    def login_again(self, customer: Customer) -> None:
        login = self.http.post(
            "/v1/client/auth",
            json={"client_id": customer.external_id},
            headers=self.client(customer.token),
        )
        assert login.status_code == 200, login.text
        assert login.json()["client_id"] == customer.client_id

    # --- grants, tracks, checks ----------------------------------------------------------

    @rule(customer=customers, entitlement=st.sampled_from(METERED), amount=st.integers(1, 40))
    def grant(self, customer: Customer, entitlement: str, amount: int) -> None:
        granted = self.http.post(
            f"/v1/customers/{customer.external_id}/grants",
            json={"entitlement_id": entitlement, "amount": amount},
            headers=self.api(),
        )
        assert granted.status_code == 201, granted.text
        customer.balances[entitlement] = customer.balances.get(entitlement, 0) + amount
        customer.granted.add(entitlement)

    @rule(
        target=events,
        customer=customers,
        surface=st.sampled_from(("protocol", "api")),
        tracked_id=st.sampled_from((*METERED, "credits", "credits", "export_hd", "nothing")),
        value=st.integers(1, 60),
    )
    def track(self, customer: Customer, surface: str, tracked_id: str, value: int) -> Any:
        body, draws = self.track_as_modelled(customer, surface, tracked_id, value, None)
        if surface == "api" and body["success"]:
            return Event(customer, body["usage_event_id"], draws)
        return multiple()

    @rule(
        target=keyed,
        customer=customers,
        surface=st.sampled_from(("protocol", "api")),
        tracked_id=st.sampled_from(("credits", "monthly_credits", "bonus_credits")),
        value=st.integers(1, 60),
    )
    def track_with_key(self, customer: Customer, surface: str, tracked_id: str, value: int) -> Sent:
        key = f"k-{uuid.uuid4().hex}"
        body, _ = self.track_as_modelled(customer, surface, tracked_id, value, key)
        return Sent(customer, key, surface, tracked_id, value, body)

    @rule(sent=keyed, surface=st.sampled_from(("protocol", "api")))
    def replay(self, sent: Sent, surface: str) -> None:
        # Keys are scoped to the customer, not the surface: the other one replays too.
        response = self.send_track(sent.customer, surface, sent.tracked_id, sent.value, sent.key)
        assert response.status_code == 200, response.text
        assert response.headers.get("idempotent-replayed") == "true"
        body = response.json()
        assert {k: body[k] for k in _refusal("", 0, 0, "")} == {
            k: sent.answer[k] for k in _refusal("", 0, 0, "")
        }

    @rule(sent=keyed, other=st.integers(61, 90))
    def reuse_key_for_another_value(self, sent: Sent, other: int) -> None:
        response = self.send_track(sent.customer, sent.surface, sent.tracked_id, other, sent.key)
        _error(response, 409, "idempotency_key_reused")

    @rule(
        customer=customers,
        tracked_id=st.sampled_from((*METERED, "credits", "export_hd", "nothing")),
        value=st.integers(1, 60),
    )
    def check(self, customer: Customer, tracked_id: str, value: int) -> None:
        expected, _ = _expected(customer, tracked_id, value)
        response = self.http.post(
            f"/v1/customers/{customer.external_id}/check",
            json={"id": tracked_id, "value": value},
            headers=self.api(),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["would_succeed"] is expected["success"], (body, expected)
        assert body["error"] == expected["error"], (body, expected)
        if expected["success"]:
            assert body["remaining_after"] == expected["remaining"], (body, expected)

    # --- reversals ----------------------------------------------------------------------

    @rule(event=events, data=st.data())
    def reverse(self, event: Event, data: st.DataObject) -> None:
        left = event.consumed - event.reversed
        amount = data.draw(st.one_of(st.none(), st.integers(1, max(1, left + 2))), "amount")
        body = {} if amount is None else {"amount": amount}
        response = self.http.post(
            f"/v1/usage_events/{event.event_id}/reversals", json=body, headers=self.api()
        )
        wanted = left if amount is None else amount
        if wanted > left:
            _error(response, 409, "reversal_exceeds_consumed")
            return
        assert response.status_code == 201, response.text
        assert response.json()["amount"] == wanted
        event.reversed += wanted
        # Give back the last drawn first.
        for entitlement, drawn in reversed(event.draws):
            back = min(drawn - event.reversed_by.get(entitlement, 0), wanted)
            if back > 0:
                event.reversed_by[entitlement] = event.reversed_by.get(entitlement, 0) + back
                event.customer.balances[entitlement] += back
                wanted -= back
        assert wanted == 0

    # --- token misuse -------------------------------------------------------------------

    @precondition(lambda self: len(self.known) >= 2)
    @rule(data=st.data())
    def someone_elses_token(self, data: st.DataObject) -> None:
        victim, thief = data.draw(st.permutations(self.known), "pair")[:2]
        response = self.track_one_with(victim, thief.token)
        _error(response, 403, "forbidden")
        refresh = self.http.post(
            "/v1/customer/refresh_entitlements",
            json={"client_id": victim.client_id},
            headers=self.client(thief.token),
        )
        _error(refresh, 403, "forbidden")

    @rule(customer=customers, position=st.integers(0, 200))
    def tampered_token(self, customer: Customer, position: int) -> None:
        token = customer.token
        assert token is not None
        # Any character but the last of each base64 part (whose low bits may be padding
        # that decoding ignores, so that a flip there would not change a byte).
        places = [i for i in range(len(token) - 1) if "." not in token[i : i + 2]]
        index = places[position % len(places)]
        flipped = "A" if token[index] != "A" else "B"
        forged = token[:index] + flipped + token[index + 1 :]
        response = self.track_one_with(customer, forged)
        # In the payload (malformed, or signed otherwise) or in the signature: refused.
        _error(response, 401)

    @rule(customer=customers)
    def no_token(self, customer: Customer) -> None:
        response = self.track_one_with(customer, None)
        _error(response, 401, "customer_token_required")

    @rule(customer=customers)
    def expired_token(self, customer: Customer) -> None:
        minted = self.http.post(
            f"/v1/customers/{customer.external_id}/tokens",
            json={"ttl_seconds": 60},
            headers=self.api(),
        )
        assert minted.status_code == 201, minted.text
        self.clock.advance(seconds=61)
        response = self.track_one_with(customer, minted.json()["token"])
        _error(response, 401, "token_expired")

    @rule(customer=customers)
    def wrong_credentials(self, customer: Customer) -> None:
        body = {"client_id": customer.client_id}
        unknown_app = self.http.post(
            "/v1/customer/refresh_entitlements",
            json=body,
            headers={
                "Authorization": "app_0000000000000000000000000",
                TOKEN_HEADER: customer.token,
            },
        )
        _error(unknown_app, 401, "invalid_app_id")
        key_as_app_id = self.http.post(
            "/v1/customer/refresh_entitlements",
            json=body,
            headers={"Authorization": self.secret_key, TOKEN_HEADER: customer.token},
        )
        _error(key_as_app_id, 401, "invalid_app_id")
        app_id_as_key = self.http.get(
            f"/v1/customers/{customer.external_id}",
            headers={"Authorization": f"Bearer {self.app_id}"},
        )
        _error(app_id_as_key, 401, "invalid_secret_key")
        token_as_key = self.http.get(
            f"/v1/customers/{customer.external_id}",
            headers={"Authorization": f"Bearer {customer.token}"},
        )
        _error(token_as_key, 401, "invalid_secret_key")

    # --- the invariant ------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        for customer in self.known:
            state = self.http.get(f"/v1/customers/{customer.external_id}", headers=self.api())
            assert state.status_code == 200, state.text
            shown: dict[str, int] = {}
            for entry in state.json()["entitlements"]:
                if entry["entitlement_id"] in METERED:
                    shown[entry["entitlement_id"]] = (
                        shown.get(entry["entitlement_id"], 0) + entry["remaining"]
                    )
            expected = {e: b for e, b in customer.balances.items() if e in customer.granted}
            assert shown == expected, (customer.external_id, shown, expected)
            keys = {k["key_id"]: k["remaining"] for k in state.json()["usage_keys"]}
            assert keys.get("credits") == sum(expected.values()), (keys, expected)


@pytest.mark.slow
def test_http_surfaces_follow_the_model(backend: revenipe.Backend, clock: Clock) -> None:
    HttpModel.backend = backend
    HttpModel.clock = clock
    run_state_machine_as_test(
        HttpModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
