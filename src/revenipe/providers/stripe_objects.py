"""Reading Stripe's objects (JSON-shaped dicts, as the API sends them): no I/O.

What the services need of a subscription, a payment intent, an event, named once here,
across API versions: a subscription's billing period sits on its items in current
versions (`items.data[0].current_period_start/end`) and at the top in older ones; an
invoice names its subscription under `parent.subscription_details` now, at the top
before.

Our metadata on every object we create links it back: the app, our customer, our
product, the access source reserved for it, and on a subscription the plan changes
made through us (`revenipe_plan_changes`), so that a subscription read at any time
tells its whole plan history and events can be applied in any order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

APP_KEY = "revenipe_app_id"
CUSTOMER_KEY = "revenipe_customer_id"
PRODUCT_KEY = "revenipe_product_id"
SOURCE_KEY = "revenipe_source_id"
SUBSCRIPTION_KEY = "revenipe_subscription_id"
"""On a setup intent: the Stripe subscription whose payment method it collects."""
PLAN_CHANGES_KEY = "revenipe_plan_changes"
MAX_METADATA_VALUE = 500
"""Stripe's limit on one metadata value, in characters."""

LIVE_STATUSES = ("trialing", "active", "past_due")


def moment(value: Any) -> datetime | None:
    """A Stripe timestamp (Unix seconds) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return datetime.fromtimestamp(value, UTC)


def unix(at: datetime) -> int:
    return int(at.timestamp())


def ref(value: Any) -> str | None:
    """An object's id, whether the field holds the id or the expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) and found else None
    return None


def metadata_of(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = obj.get("metadata")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --- plan history in metadata ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanChange:
    """At `at`, the subscription moved from one catalog product to another."""

    from_product_id: str
    to_product_id: str
    at: datetime


_CHANGE = re.compile(r"^([a-z0-9_.\-]{1,64})>([a-z0-9_.\-]{1,64})@([0-9]{1,12})$")


def parse_plan_changes(text: str | None) -> list[PlanChange]:
    """The changes written by `format_plan_changes`, oldest first; malformed entries
    (someone edited the metadata by hand) are skipped."""
    changes = []
    for entry in (text or "").split(";"):
        match = _CHANGE.match(entry.strip())
        if match is None:
            continue
        at = datetime.fromtimestamp(int(match.group(3)), UTC)
        changes.append(PlanChange(match.group(1), match.group(2), at))
    changes.sort(key=lambda c: c.at)
    return changes


def format_plan_changes(changes: Sequence[PlanChange]) -> str:
    """`from>to@unix;...`, within Stripe's 500 characters: the oldest go first (they
    were applied long before a newer one could be written)."""
    entries = [f"{c.from_product_id}>{c.to_product_id}@{unix(c.at)}" for c in changes]
    while entries and len(";".join(entries)) > MAX_METADATA_VALUE:
        entries.pop(0)
    return ";".join(entries)


# --- subscriptions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledPhase:
    """The next phase of a subscription's schedule: its price from `start`."""

    schedule_id: str
    price_id: str
    start: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    id: str
    customer: str | None
    status: str
    item_id: str | None
    price_id: str | None
    currency: str | None
    start_date: datetime
    anchor: datetime
    period_start: datetime
    period_end: datetime
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    payment_method_attached: bool
    metadata: dict[str, str]
    schedule_id: str | None
    next_phase: ScheduledPhase | None

    @property
    def plan_changes(self) -> list[PlanChange]:
        return parse_plan_changes(self.metadata.get(PLAN_CHANGES_KEY))


def read_subscription(obj: Mapping[str, Any]) -> SubscriptionView:
    """A subscription object (its `schedule` expanded or not)."""
    items = _mapping(obj.get("items")).get("data") or []
    item = _mapping(items[0]) if items else {}
    price = item.get("price")
    period_start = moment(item.get("current_period_start")) or moment(
        obj.get("current_period_start")
    )
    period_end = moment(item.get("current_period_end")) or moment(obj.get("current_period_end"))
    start_date = moment(obj.get("start_date")) or moment(obj.get("created"))
    if start_date is None or period_start is None or period_end is None:
        raise ValueError(f"subscription {obj.get('id')!r} has no start or billing period")
    period_end_unix = unix(period_end)
    cancel_at = obj.get("cancel_at")
    schedule = obj.get("schedule")
    return SubscriptionView(
        id=str(obj["id"]),
        customer=ref(obj.get("customer")),
        status=str(obj.get("status")),
        item_id=ref(item.get("id")),
        price_id=ref(price),
        currency=obj.get("currency") if isinstance(obj.get("currency"), str) else None,
        start_date=start_date,
        anchor=moment(obj.get("billing_cycle_anchor")) or period_start,
        period_start=period_start,
        period_end=period_end,
        trial_end=moment(obj.get("trial_end")),
        # A cancel set for the period's end arrives either way, depending on who set it.
        cancel_at_period_end=bool(obj.get("cancel_at_period_end"))
        or (isinstance(cancel_at, int) and cancel_at == period_end_unix),
        canceled_at=moment(obj.get("canceled_at")),
        ended_at=moment(obj.get("ended_at")),
        payment_method_attached=ref(obj.get("default_payment_method")) is not None
        or ref(obj.get("default_source")) is not None,
        metadata=metadata_of(obj),
        schedule_id=ref(schedule),
        next_phase=_next_phase(schedule) if isinstance(schedule, Mapping) else None,
    )


def _next_phase(schedule: Mapping[str, Any]) -> ScheduledPhase | None:
    if schedule.get("status") not in ("not_started", "active"):
        return None
    current = _mapping(schedule.get("current_phase"))
    after = current.get("end_date") if isinstance(current.get("end_date"), int) else None
    upcoming = []
    for phase in schedule.get("phases") or []:
        start = _mapping(phase).get("start_date")
        if isinstance(start, int) and (after is None or start >= after):
            upcoming.append(_mapping(phase))
    if not upcoming:
        return None
    phase = min(upcoming, key=lambda p: p["start_date"])
    phase_items = phase.get("items") or []
    price_id = ref(_mapping(phase_items[0]).get("price")) if phase_items else None
    start = moment(phase["start_date"])
    if price_id is None or start is None:
        return None
    return ScheduledPhase(str(schedule["id"]), price_id, start)


def pending_setup_intent(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    found = obj.get("pending_setup_intent")
    return found if isinstance(found, Mapping) else None


def first_payment_secret(obj: Mapping[str, Any]) -> str | None:
    """The client secret that pays a new subscription's first invoice: the invoice's
    `confirmation_secret` in current API versions, its payment intent's in older ones."""
    invoice = _mapping(obj.get("latest_invoice"))
    for holder in (invoice.get("confirmation_secret"), invoice.get("payment_intent")):
        secret = _mapping(holder).get("client_secret")
        if isinstance(secret, str) and secret:
            return secret
    return None


# --- one-time payments ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentView:
    id: str
    status: str
    customer: str | None
    metadata: dict[str, str]
    paid_at: datetime
    """When the money was taken (the latest charge), else when the intent was made."""
    fully_refunded: bool
    disputed: bool


def read_payment_intent(obj: Mapping[str, Any]) -> PaymentView:
    """A payment intent with `latest_charge` expanded (or not)."""
    charge = _mapping(obj.get("latest_charge"))
    created = moment(obj.get("created"))
    if created is None:
        raise ValueError(f"payment intent {obj.get('id')!r} has no creation time")
    return PaymentView(
        id=str(obj["id"]),
        status=str(obj.get("status")),
        customer=ref(obj.get("customer")),
        metadata=metadata_of(obj),
        paid_at=moment(charge.get("created")) or created,
        fully_refunded=bool(charge.get("refunded")),
        disputed=bool(charge.get("disputed")),
    )


def refunded_at(refunds: Sequence[Mapping[str, Any]]) -> datetime | None:
    """When a payment became fully refunded: its latest refund that went through."""
    times = [moment(r.get("created")) for r in refunds if r.get("status") == "succeeded"]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def dispute_lost_at(disputes: Sequence[Mapping[str, Any]]) -> datetime | None:
    """When the customer opened a dispute that the app then lost (the payment was void
    from then on); None while no dispute is lost."""
    times = [moment(d.get("created")) for d in disputes if d.get("status") == "lost"]
    known = [t for t in times if t is not None]
    return min(known) if known else None


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about, to be read again from Stripe as it stands now."""

    kind: str
    """subscription, payment (a payment intent), checkout (a session), setup_intent."""
    id: str


def event_target(event: Mapping[str, Any]) -> Target | None:
    """The object an event changed, or None for events we have no use for."""
    kind = str(event.get("type", ""))
    obj = _mapping(_mapping(event.get("data")).get("object"))
    found: tuple[str, str | None] | None = None
    if kind.startswith("customer.subscription."):
        found = ("subscription", ref(obj.get("id")))
    elif kind.startswith("subscription_schedule."):
        found = (
            "subscription",
            ref(obj.get("subscription")) or ref(obj.get("released_subscription")),
        )
    elif kind.startswith("invoice."):
        details = _mapping(_mapping(obj.get("parent")).get("subscription_details"))
        found = ("subscription", ref(details.get("subscription")) or ref(obj.get("subscription")))
    elif kind.startswith("checkout.session."):
        found = ("checkout", ref(obj.get("id")))
    elif kind.startswith("payment_intent."):
        found = ("payment", ref(obj.get("id")))
    elif kind.startswith(("charge.", "refund.")):
        # A charge, a refund or a dispute: each names its payment intent.
        found = ("payment", ref(obj.get("payment_intent")))
    elif kind == "setup_intent.succeeded":
        found = ("setup_intent", ref(obj.get("id")))
    if found is None or found[1] is None:
        return None
    return Target(found[0], found[1])
