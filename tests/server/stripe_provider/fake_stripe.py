"""A fake Stripe behind the stripe library's HTTP seam (`stripe.HTTPClient`).

It answers the requests our code sends with copies of Stripe's own example objects
(tests/fixtures/stripe/fixtures3.json), adjusted per request: new ids, the parameters
sent (customer, metadata, items, trial), statuses and times on the test clock. Each
secret key is one Stripe account: an object of another account is "no such object".

Tests read `requests` (method, path, form, headers) to assert what we sent, and move
Stripe's side on with the helpers at the bottom (a checkout paid, a renewal, a refund,
a dispute...), each returning the event Stripe would send, with the object as it was
then; `deliver` signs and posts an event to our webhook endpoint.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from revenipe.engine.periods import Interval, period_start

from support import Clock

FIXTURES = Path(__file__).parents[2] / "fixtures" / "stripe" / "fixtures3.json"
_RESOURCES: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]


def example(resource: str) -> dict[str, Any]:
    """A fresh copy of Stripe's example object of `resource`."""
    return copy.deepcopy(_RESOURCES[resource])


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            following = None if last else parts[index + 1]
            if isinstance(node, list):
                position = int(part)
                while len(node) <= position:
                    node.append(None)
                if last:
                    node[position] = value
                else:
                    if node[position] is None:
                        node[position] = [] if following.isdigit() else {}
                    node = node[position]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if following.isdigit() else {})
    return root


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    """Query (GET) or form (POST), nested."""
    form: dict[str, str]
    """The form as sent, flat (`metadata[revenipe_app_id]`)."""
    headers: dict[str, str]

    @property
    def account(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


_EVENT_ON_CREATE = {
    "customer": "customer.created",
    "payment_intent": "payment_intent.created",
    "setup_intent": "setup_intent.created",
    "subscription": "customer.subscription.created",
    "subscription_schedule": "subscription_schedule.created",
}
"""What Stripe announces when our call makes one of these."""


class StripeFailure(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message}}


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass
class FakeStripe(stripe.HTTPClient):
    clock: Clock
    requests: list[Request] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Prices made in each account's dashboard, by (secret key, price id)."""
    accounts: dict[str, str] = field(default_factory=dict)
    """Object id -> the secret key of the account that holds it."""
    failures: list[StripeFailure] = field(default_factory=list)
    """Answered, in order, to the next requests instead of doing them."""
    _replayed: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    name = "fake-stripe"

    def __post_init__(self) -> None:
        super().__init__()

    # --- the seam ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        parts = urlsplit(url)
        pairs = parse_qsl(post_data or parts.query, keep_blank_values=True)
        request = Request(method.upper(), parts.path, nest(pairs), dict(pairs), dict(headers or {}))
        self.requests.append(request)
        key = request.idempotency_key
        if key and (request.account, key) in self._replayed:
            body, status = self._replayed[(request.account, key)]
            return body, status, {"request-id": "req_replayed"}
        try:
            if self.failures:
                raise self.failures.pop(0)
            answer = self._route(request)
            body, status = json.dumps(answer), 200
        except StripeFailure as failure:
            body, status = json.dumps(failure.body), failure.status
        if key and request.method == "POST" and status == 200:
            self._replayed[(request.account, key)] = (body, status)
        return body, status, {"request-id": f"req_{next(self._ids)}"}

    def request_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- what we sent --------------------------------------------------------------------

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def last(self, method: str, path: str) -> Request:
        found = self.sent(method, path)
        assert found, (
            f"no {method} {path} was sent; sent: {[(r.method, r.path) for r in self.requests]}"
        )
        return found[-1]

    # --- objects -----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return _unix(self.clock.now)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def store(self, obj: dict[str, Any], account: str) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        self.accounts[obj["id"]] = account
        return obj

    def get(self, object_id: str, account: str | None = None) -> dict[str, Any]:
        if account is not None and (account, object_id) in self.prices:
            return self.prices[(account, object_id)]
        found = self.objects.get(object_id)
        if found is None or (account is not None and self.accounts[object_id] != account):
            raise StripeFailure(404, f"No such object: '{object_id}'")
        return found

    def _expanded(self, obj: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        answer = copy.deepcopy(obj)
        for path in expand:
            head, _, rest = path.partition(".")
            value = answer.get(head)
            if isinstance(value, str) and value in self.objects:
                answer[head] = self._expanded(self.objects[value], [rest] if rest else [])
            elif isinstance(value, dict) and rest:
                answer[head] = self._expanded(value, [rest])
        return answer

    def _route(self, request: Request) -> dict[str, Any]:
        method, segments = request.method, request.path.strip("/").split("/")[1:]
        params, account = request.params, request.account
        expand = list(params.get("expand") or [])
        handlers: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
            ("POST", "customers"): self._create_customer,
            ("POST", "ephemeral_keys"): self._create_ephemeral_key,
            ("POST", "checkout/sessions"): self._create_checkout_session,
            ("POST", "payment_intents"): self._create_payment_intent,
            ("POST", "subscriptions"): self._create_subscription,
            ("POST", "subscription_schedules"): self._create_schedule,
            ("POST", "setup_intents"): self._create_setup_intent,
        }
        joined = "/".join(segments)
        if (method, joined) in handlers:
            made = handlers[(method, joined)](params, account)
            if made.get("object") in _EVENT_ON_CREATE:
                self.event(_EVENT_ON_CREATE[made["object"]], made)
            return self._expanded(made, expand)
        if method == "GET" and joined in ("refunds", "disputes"):
            resource = joined[:-1]
            intent = params.get("payment_intent")
            data = [
                copy.deepcopy(o)
                for i, o in self.objects.items()
                if o.get("object") == resource
                and o.get("payment_intent") == intent
                and self.accounts[i] == account
            ]
            return {"object": "list", "data": data, "has_more": False, "url": f"/v1/{joined}"}
        object_id = segments[-1] if method != "POST" or segments[-1] != "release" else segments[-2]
        obj = self.get(object_id, account)
        if method == "GET":
            return self._expanded(obj, expand)
        if method == "DELETE" and segments[0] == "subscriptions":
            self.cancel_now(object_id)
            self.event("customer.subscription.deleted", obj)
            return self._expanded(obj, expand)
        if method == "POST" and segments[0] == "subscriptions":
            self._update_subscription(obj, params)
            self.event("customer.subscription.updated", obj)
            return self._expanded(obj, expand)
        if method == "POST" and segments[0] == "subscription_schedules":
            if segments[-1] == "release":
                self.release_schedule(object_id)
                self.event("subscription_schedule.released", obj)
            else:
                self._update_schedule(obj, params)
                self.event("subscription_schedule.updated", obj)
            return self._expanded(obj, expand)
        raise StripeFailure(404, f"Unrecognized request URL ({method}: {request.path})")

    # --- creating ------------------------------------------------------------------------

    def _create_customer(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        customer = example("customer")
        customer.update(
            id=self.new_id("cus"), created=self.now, metadata=params.get("metadata", {})
        )
        customer["discount"] = None
        return self.store(customer, account)

    def _create_ephemeral_key(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        self.get(params["customer"], account)
        key = example("ephemeral_key")
        key_id = self.new_id("ephkey")
        key.update(
            id=key_id,
            created=self.now,
            expires=self.now + 3600,
            secret=f"ek_test_{key_id}",
            associated_objects=[{"id": params["customer"], "type": "customer"}],
        )
        return key

    def _price(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        if "price" in params:
            return copy.deepcopy(self.get(params["price"], account))
        data = params["price_data"]
        price = example("price")
        price.update(
            id=self.new_id("price"),
            currency=data["currency"],
            unit_amount=int(data["unit_amount"]),
            unit_amount_decimal=data["unit_amount"],
            product=self.new_id("prod"),
            metadata={},
        )
        if "recurring" in data:
            price["type"] = "recurring"
            price["recurring"] = {
                "interval": data["recurring"]["interval"],
                "interval_count": 1,
                "meter": None,
                "usage_type": "licensed",
                "trial_period_days": None,
            }
        else:
            price.update(type="one_time", recurring=None)
        return price

    def add_price(
        self, account: str, price_id: str, amount: int, interval: str | None = None
    ) -> dict[str, Any]:
        """A Price the app made in its Stripe dashboard (named in the catalog)."""
        price = example("price")
        price.update(id=price_id, unit_amount=amount, unit_amount_decimal=str(amount), metadata={})
        if interval is None:
            price.update(type="one_time", recurring=None)
        else:
            price["recurring"].update(interval=interval, interval_count=1)
        self.prices[(account, price_id)] = price
        return price

    def _create_checkout_session(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        session = example("checkout.session")
        session_id = self.new_id("cs_test")
        session.update(
            id=session_id,
            created=self.now,
            expires_at=self.now + 86400,
            mode=params["mode"],
            customer=params.get("customer"),
            client_reference_id=params.get("client_reference_id"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            metadata=params.get("metadata", {}),
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
            payment_intent=None,
            subscription=None,
            setup_intent=None,
            status="open",
            payment_status="unpaid",
        )
        session["_params"] = params  # what completing it needs (not sent back as such)
        return self.store(session, account)

    def _create_payment_intent(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        intent = example("payment_intent")
        intent_id = self.new_id("pi")
        intent.update(
            id=intent_id,
            created=self.now,
            amount=int(params["amount"]),
            currency=params["currency"],
            customer=params.get("customer"),
            metadata=params.get("metadata", {}),
            client_secret=f"{intent_id}_secret_fake",
            status="requires_payment_method",
            latest_charge=None,
            canceled_at=None,
            last_payment_error=None,
            next_action=None,
        )
        return self.store(intent, account)

    def _create_setup_intent(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        intent = example("setup_intent")
        intent_id = self.new_id("seti")
        intent.update(
            id=intent_id,
            created=self.now,
            customer=params.get("customer"),
            metadata=params.get("metadata", {}),
            usage=params.get("usage", "off_session"),
            client_secret=f"{intent_id}_secret_fake",
            status="requires_payment_method",
            last_setup_error=None,
            next_action=None,
        )
        return self.store(intent, account)

    def _create_subscription(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        item_params = params["items"][0]
        return self.new_subscription(
            account,
            customer=params["customer"],
            price=self._price(item_params, account),
            metadata=params.get("metadata", {}),
            trial_days=int(params["trial_period_days"]) if "trial_period_days" in params else None,
            trial_end=int(params["trial_end"]) if "trial_end" in params else None,
            paid=False,
        )

    def new_subscription(
        self,
        account: str,
        *,
        customer: str,
        price: dict[str, Any],
        metadata: dict[str, str],
        trial_days: int | None = None,
        trial_end: int | None = None,
        paid: bool,
    ) -> dict[str, Any]:
        sub = example("subscription")
        sub_id = self.new_id("sub")
        if trial_days is not None:
            trial_end = _unix(self.clock.now + timedelta(days=trial_days))
        start = self.now
        anchor = trial_end or start
        item = sub["items"]["data"][0]
        item.update(id=self.new_id("si"), created=start, price=price, subscription=sub_id)
        sub.update(
            id=sub_id,
            created=start,
            start_date=start,
            customer=customer,
            metadata=dict(metadata),
            billing_cycle_anchor=anchor,
            cancel_at=None,
            cancel_at_period_end=False,
            canceled_at=None,
            ended_at=None,
            trial_start=start if trial_end else None,
            trial_end=trial_end,
            default_payment_method="pm_card_visa" if paid else None,
            schedule=None,
            pending_setup_intent=None,
            pending_update=None,
            latest_invoice=None,
        )
        sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
        self._set_period(sub, start, trial_end or self._period_end(sub, anchor, 1))
        if trial_end:
            sub["status"] = "trialing"
            if not paid:
                intent = self._create_setup_intent({"customer": customer}, account)
                sub["pending_setup_intent"] = intent["id"]
        elif paid:
            sub["status"] = "active"
        else:
            sub["status"] = "incomplete"
            invoice = example("invoice")
            invoice_id = self.new_id("in")
            invoice.update(
                id=invoice_id,
                customer=customer,
                created=start,
                status="open",
                confirmation_secret={
                    "client_secret": f"{invoice_id}_secret_pay",
                    "type": "payment_intent",
                },
            )
            invoice["parent"] = {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": dict(metadata), "subscription": sub_id},
            }
            self.store(invoice, account)
            sub["latest_invoice"] = invoice_id
        return self.store(sub, account)

    def _create_schedule(self, params: dict[str, Any], account: str) -> dict[str, Any]:
        sub = self.get(params["from_subscription"], account)
        schedule = example("subscription_schedule")
        item = sub["items"]["data"][0]
        schedule.update(
            id=self.new_id("sub_sched"),
            created=self.now,
            customer=sub["customer"],
            subscription=sub["id"],
            status="active",
            canceled_at=None,
            completed_at=None,
            released_at=None,
            current_phase={
                "start_date": item["current_period_start"],
                "end_date": item["current_period_end"],
            },
        )
        phase = schedule["phases"][0]
        phase.update(
            start_date=item["current_period_start"],
            end_date=item["current_period_end"],
            metadata={},
        )
        phase["items"][0]["price"] = item["price"]["id"]
        schedule["phases"] = [phase]
        sub["schedule"] = schedule["id"]
        return self.store(schedule, account)

    # --- changing -------------------------------------------------------------------------

    @staticmethod
    def _set_period(sub: dict[str, Any], start: int, end: int) -> None:
        item = sub["items"]["data"][0]
        item["current_period_start"], item["current_period_end"] = start, end

    @staticmethod
    def period(sub: dict[str, Any]) -> tuple[int, int]:
        item = sub["items"]["data"][0]
        return item["current_period_start"], item["current_period_end"]

    def _period_end(self, sub: dict[str, Any], anchor: int, k: int) -> int:
        interval = Interval(sub["items"]["data"][0]["price"]["recurring"]["interval"])
        start = datetime.fromtimestamp(anchor, self.clock.now.tzinfo)
        return _unix(period_start(start, interval, k))

    def _update_subscription(self, sub: dict[str, Any], params: dict[str, Any]) -> None:
        if "cancel_at_period_end" in params:
            if sub.get("schedule"):
                raise StripeFailure(
                    400,
                    "The subscription is managed by the subscription schedule; "
                    "update the schedule instead.",
                )
            canceling = params["cancel_at_period_end"] == "true"
            sub["cancel_at_period_end"] = canceling
            sub["canceled_at"] = self.now if canceling else None
        if "metadata" in params:
            sub["metadata"].update(params["metadata"])
        if "default_payment_method" in params:
            sub["default_payment_method"] = params["default_payment_method"]
        if "items" in params:
            if sub.get("schedule"):
                raise StripeFailure(400, "The subscription is managed by a schedule.")
            item = sub["items"]["data"][0]
            assert params["items"][0]["id"] == item["id"], params
            old_interval = item["price"]["recurring"]["interval"]
            account = self.accounts[sub["id"]]
            item["price"] = copy.deepcopy(self.get(params["items"][0]["price"], account))
            if (
                item["price"]["recurring"]["interval"] != old_interval
                and sub["status"] != "trialing"
            ):
                # A change of interval starts a new billing period now, as Stripe does.
                sub["billing_cycle_anchor"] = int(params.get("proration_date", self.now))
                start = sub["billing_cycle_anchor"]
                self._set_period(sub, start, self._period_end(sub, start, 1))

    def _update_schedule(self, schedule: dict[str, Any], params: dict[str, Any]) -> None:
        phases = []
        for phase in params["phases"]:
            phases.append(
                {
                    "start_date": int(phase["start_date"]) if "start_date" in phase else None,
                    "end_date": int(phase["end_date"]) if "end_date" in phase else None,
                    "items": [
                        {"price": i["price"], "quantity": int(i["quantity"])}
                        for i in phase["items"]
                    ],
                    "metadata": phase.get("metadata", {}),
                    "proration_behavior": phase.get("proration_behavior", "create_prorations"),
                    "trial_end": int(phase["trial_end"]) if "trial_end" in phase else None,
                }
            )
        for previous, phase in itertools.pairwise(phases):
            if phase["start_date"] is None:
                phase["start_date"] = previous["end_date"]
        schedule["phases"] = phases
        schedule["end_behavior"] = params.get("end_behavior", schedule["end_behavior"])
        schedule["_duration"] = params["phases"][-1].get("duration")

    def release_schedule(self, schedule_id: str) -> None:
        schedule = self.objects[schedule_id]
        sub = self.objects[schedule["subscription"]]
        schedule.update(status="released", released_at=self.now, released_subscription=sub["id"])
        schedule["subscription"] = None
        sub["schedule"] = None

    def cancel_now(self, sub_id: str) -> None:
        sub = self.objects[sub_id]
        if sub.get("schedule"):
            self.objects[sub["schedule"]].update(status="canceled", canceled_at=self.now)
            sub["schedule"] = None
        sub.update(
            status="canceled", canceled_at=self.now, ended_at=self.now, cancel_at_period_end=False
        )

    # --- Stripe's side of the story: each returns the event Stripe sends ------------------

    events: list[dict[str, Any]] = field(default_factory=list)
    event_accounts: dict[str, str | None] = field(default_factory=dict)
    """Event id -> the account it is of (its object's)."""

    def event(self, kind: str, obj: dict[str, Any], **previous: Any) -> dict[str, Any]:
        event = example("event")
        snapshot = {k: v for k, v in copy.deepcopy(obj).items() if not k.startswith("_")}
        event.update(
            id=self.new_id("evt"),
            created=self.now,
            type=kind,
            api_version="2026-10-28.endive",
            data={"object": snapshot, **({"previous_attributes": previous} if previous else {})},
        )
        self.events.append(event)
        self.event_accounts[event["id"]] = self.accounts.get(obj.get("id", ""))
        return event

    def _charge(self, intent: dict[str, Any]) -> dict[str, Any]:
        charge = example("charge")
        charge.update(
            id=self.new_id("ch"),
            created=self.now,
            amount=intent["amount"],
            amount_captured=intent["amount"],
            currency=intent["currency"],
            customer=intent["customer"],
            payment_intent=intent["id"],
            metadata=dict(intent["metadata"]),
            captured=True,
            paid=True,
            status="succeeded",
            refunded=False,
            amount_refunded=0,
            disputed=False,
        )
        charge["refunds"] = {"object": "list", "data": [], "has_more": False, "url": ""}
        return self.store(charge, self.accounts[intent["id"]])

    def pay_intent(self, intent_id: str) -> dict[str, Any]:
        intent = self.objects[intent_id]
        charge = self._charge(intent)
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
        )
        return self.event("payment_intent.succeeded", intent)

    def complete_checkout(self, session_id: str) -> list[dict[str, Any]]:
        """The customer paid on Stripe's page: what Stripe makes, and its events."""
        session = self.objects[session_id]
        params, account = session["_params"], self.accounts[session_id]
        events = []
        if session["mode"] == "payment":
            line = params["line_items"][0]
            price = self._price(line, account)
            intent = self._create_payment_intent(
                {
                    "amount": price["unit_amount"],
                    "currency": price["currency"],
                    "customer": session["customer"],
                    "metadata": params.get("payment_intent_data", {}).get("metadata", {}),
                },
                account,
            )
            session["payment_intent"] = intent["id"]
            events.append(self.pay_intent(intent["id"]))
        elif session["mode"] == "subscription":
            data = params.get("subscription_data", {})
            sub = self.new_subscription(
                account,
                customer=session["customer"],
                price=self._price(params["line_items"][0], account),
                metadata=data.get("metadata", {}),
                trial_days=int(data["trial_period_days"]) if "trial_period_days" in data else None,
                paid=True,
            )
            session["subscription"] = sub["id"]
            events.append(self.event("customer.subscription.created", sub))
        else:
            intent = self._create_setup_intent(
                {
                    "customer": session["customer"],
                    "metadata": params.get("setup_intent_data", {}).get("metadata", {}),
                },
                account,
            )
            intent.update(status="succeeded", payment_method="pm_card_visa")
            session["setup_intent"] = intent["id"]
        session.update(status="complete", payment_status="paid")
        events.append(self.event("checkout.session.completed", session))
        return events

    def confirm_setup_intent(self, intent_id: str) -> dict[str, Any]:
        intent = self.objects[intent_id]
        intent.update(status="succeeded", payment_method="pm_card_visa")
        for obj in self.objects.values():
            if obj.get("object") == "subscription" and obj.get("pending_setup_intent") == intent_id:
                # save_default_payment_method=on_subscription
                obj.update(default_payment_method="pm_card_visa", pending_setup_intent=None)
        return self.event("setup_intent.succeeded", intent)

    def pay_first_invoice(self, sub_id: str) -> list[dict[str, Any]]:
        sub = self.objects[sub_id]
        sub.update(status="active", default_payment_method="pm_card_visa")
        invoice = self.objects[sub["latest_invoice"]]
        invoice.update(status="paid", amount_paid=invoice["amount_due"])
        return [
            self.event("invoice.paid", invoice),
            self.event("customer.subscription.updated", sub),
        ]

    def renew(self, sub_id: str, *, paid: bool = True) -> list[dict[str, Any]]:
        """The period ended: the next one starts (a scheduled phase first, if due)."""
        sub = self.objects[sub_id]
        _start, end = self.period(sub)
        schedule = self.objects.get(sub.get("schedule") or "")
        if (
            schedule is not None
            and len(schedule["phases"]) > 1
            and schedule["phases"][1]["start_date"] <= end
        ):
            phase = schedule["phases"][1]
            item = sub["items"]["data"][0]
            old_interval = item["price"]["recurring"]["interval"]
            account = self.accounts[sub_id]
            item["price"] = copy.deepcopy(self.get(phase["items"][0]["price"], account))
            sub["metadata"].update(phase["metadata"])
            if item["price"]["recurring"]["interval"] != old_interval:
                sub["billing_cycle_anchor"] = end
            schedule["current_phase"] = {"start_date": end, "end_date": None}
        if sub["cancel_at_period_end"]:
            sub.update(status="canceled", ended_at=end, cancel_at_period_end=False)
            return [self.event("customer.subscription.deleted", sub)]
        if sub["status"] == "trialing" and not sub.get("default_payment_method"):
            sub.update(status="canceled", ended_at=end, canceled_at=end)
            return [self.event("customer.subscription.deleted", sub)]
        anchor = sub["billing_cycle_anchor"]
        k = 1
        while self._period_end(sub, anchor, k) <= end:
            k += 1
        self._set_period(sub, end, self._period_end(sub, anchor, k))
        sub["status"] = "active" if paid else "past_due"
        if (
            schedule is not None
            and schedule["status"] == "active"
            and schedule["current_phase"]["end_date"] is None
        ):
            # The last phase has begun: the schedule lets go (end_behavior release).
            self.release_schedule(schedule["id"])
        invoice = example("invoice")
        invoice.update(id=self.new_id("in"), customer=sub["customer"], created=self.now)
        invoice["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub_id},
        }
        self.store(invoice, self.accounts[sub_id])
        kind = "invoice.paid" if paid else "invoice.payment_failed"
        return [self.event("customer.subscription.updated", sub), self.event(kind, invoice)]

    def refund(self, intent_id: str) -> list[dict[str, Any]]:
        intent = self.objects[intent_id]
        charge = self.objects[intent["latest_charge"]]
        refund = example("refund")
        refund.update(
            id=self.new_id("re"),
            created=self.now,
            amount=charge["amount"],
            charge=charge["id"],
            payment_intent=intent_id,
            status="succeeded",
        )
        self.store(refund, self.accounts[intent_id])
        charge.update(refunded=True, amount_refunded=charge["amount"])
        return [self.event("refund.created", refund), self.event("charge.refunded", charge)]

    def open_dispute(self, intent_id: str) -> dict[str, Any]:
        intent = self.objects[intent_id]
        charge = self.objects[intent["latest_charge"]]
        dispute = example("dispute")
        dispute.update(
            id=self.new_id("dp"),
            created=self.now,
            amount=charge["amount"],
            charge=charge["id"],
            payment_intent=intent_id,
            status="needs_response",
        )
        self.store(dispute, self.accounts[intent_id])
        charge["disputed"] = True
        return self.event("charge.dispute.created", dispute)

    def close_dispute(self, dispute_id: str, status: str) -> dict[str, Any]:
        dispute = self.objects[dispute_id]
        dispute["status"] = status
        return self.event("charge.dispute.closed", dispute)


# --- signing, as Stripe does ------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """`Stripe-Signature` for `payload`: HMAC-SHA256 of "<t>.<body>" with the secret."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{signed_at}.".encode() + payload, hashlib.sha256)
    return f"t={signed_at},v1={mac.hexdigest()}"
