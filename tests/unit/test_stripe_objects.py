"""Reading Stripe's objects (`providers.stripe_objects`): pure, across API versions."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from revenipe.providers import stripe_objects as so

FIXTURES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "stripe" / "fixtures3.json").read_text()
)["resources"]


def example(name: str) -> dict[str, Any]:
    return copy.deepcopy(FIXTURES[name])


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_subscription_of_the_current_api_has_its_period_on_its_item() -> None:
    sub = example("subscription")
    item = sub["items"]["data"][0]
    item["current_period_start"], item["current_period_end"] = 1_700_000_000, 1_702_592_000
    sub.update(cancel_at=None, cancel_at_period_end=False, default_payment_method="pm_1")
    view = so.read_subscription(sub)
    assert (view.period_start, view.period_end) == (at(1_700_000_000), at(1_702_592_000))
    assert view.price_id == "price_1PgafmB7WZ01zgkW6dKueIc5" and view.item_id == item["id"]
    assert view.customer == "cus_QXg1o8vcGmoR32" and view.anchor == at(1234567890)
    assert view.payment_method_attached is True and view.cancel_at_period_end is False
    assert view.schedule_id is None and view.next_phase is None


def test_an_older_api_version_has_it_at_the_top_and_cancel_at_means_period_end() -> None:
    sub = example("subscription")
    for key in ("current_period_start", "current_period_end"):
        del sub["items"]["data"][0][key]
    sub.update(
        current_period_start=1_700_000_000,
        current_period_end=1_702_592_000,
        cancel_at_period_end=False,
        cancel_at=1_702_592_000,
    )
    view = so.read_subscription(sub)
    assert view.period_end == at(1_702_592_000)
    assert view.cancel_at_period_end is True, (
        "a cancel set at the period's end, as the dashboard does"
    )


def test_an_expanded_schedule_names_the_next_phase() -> None:
    sub = example("subscription")
    schedule = example("subscription_schedule")
    schedule.update(status="active", current_phase={"start_date": 100, "end_date": 200})
    later = copy.deepcopy(schedule["phases"][0])
    later.update(start_date=200, end_date=None)
    later["items"][0]["price"] = {"id": "price_next", "object": "price"}
    schedule["phases"][0].update(start_date=100, end_date=200)
    schedule["phases"].append(later)
    sub["schedule"] = schedule
    view = so.read_subscription(sub)
    assert view.schedule_id == schedule["id"]
    assert view.next_phase == so.ScheduledPhase(schedule["id"], "price_next", at(200))
    schedule["status"] = "released"
    assert so.read_subscription(sub).next_phase is None


def test_events_name_the_object_to_read_again() -> None:
    def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        found = example("event")
        found.update(type=kind, data={"object": obj})
        return found

    invoice = example("invoice")
    invoice["parent"] = {"subscription_details": {"subscription": "sub_new"}}
    old_invoice = {"id": "in_1", "subscription": "sub_old"}
    dispute = example("dispute")
    dispute["payment_intent"] = "pi_disputed"
    cases = {
        ("customer.subscription.updated", json.dumps({"id": "sub_1"})): ("subscription", "sub_1"),
        ("invoice.paid", json.dumps(invoice)): ("subscription", "sub_new"),
        ("invoice.payment_failed", json.dumps(old_invoice)): ("subscription", "sub_old"),
        ("subscription_schedule.released", json.dumps({"released_subscription": "sub_2"})): (
            "subscription",
            "sub_2",
        ),
        ("checkout.session.completed", json.dumps({"id": "cs_1"})): ("checkout", "cs_1"),
        ("payment_intent.succeeded", json.dumps({"id": "pi_1"})): ("payment", "pi_1"),
        ("charge.refunded", json.dumps({"id": "ch_1", "payment_intent": "pi_2"})): (
            "payment",
            "pi_2",
        ),
        ("charge.dispute.closed", json.dumps(dispute)): ("payment", "pi_disputed"),
        ("refund.created", json.dumps({"id": "re_1", "payment_intent": "pi_3"})): (
            "payment",
            "pi_3",
        ),
        ("setup_intent.succeeded", json.dumps({"id": "seti_1"})): ("setup_intent", "seti_1"),
    }
    for (kind, obj), (target, ref) in cases.items():
        assert so.event_target(event(kind, json.loads(obj))) == so.Target(target, ref), kind
    for kind, obj in (
        ("plan.created", {"id": "plan_1"}),
        ("invoice.paid", {"id": "in_2", "subscription": None}),  # a one-off invoice
        ("charge.refunded", {"id": "ch_2", "payment_intent": None}),
    ):
        assert so.event_target(event(kind, obj)) is None, kind


def test_refunds_and_lost_disputes_say_when_the_money_went_back() -> None:
    refunds = [
        {"status": "succeeded", "created": 300},
        {"status": "failed", "created": 900},
        {"status": "succeeded", "created": 500},
    ]
    assert so.refunded_at(refunds) == at(500)
    assert so.refunded_at([{"status": "pending", "created": 1}]) is None
    disputes = [{"status": "won", "created": 10}, {"status": "lost", "created": 40}]
    assert so.dispute_lost_at(disputes) == at(40)
    assert so.dispute_lost_at([{"status": "needs_response", "created": 5}]) is None


product_ids = st.from_regex(r"[a-z0-9_.\-]{1,20}", fullmatch=True)


@given(st.lists(st.tuples(product_ids, product_ids, st.integers(1, 2_000_000_000)), max_size=40))
def test_plan_changes_survive_metadata_and_fit_in_it(
    raw: list[tuple[str, str, int]],
) -> None:
    changes = sorted((so.PlanChange(a, b, at(t)) for a, b, t in raw), key=lambda c: c.at)
    text = so.format_plan_changes(changes)
    assert len(text) <= so.MAX_METADATA_VALUE
    parsed = so.parse_plan_changes(text)
    # What fits is the newest changes, unchanged (oldest dropped first).
    assert parsed == changes[len(changes) - len(parsed) :]
    assert so.parse_plan_changes(text + ";garbage;a>b@x") == parsed
