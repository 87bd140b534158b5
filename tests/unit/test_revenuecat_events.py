"""RevenueCat's event bodies read into `Event`s: fields checked, instants exact to the
millisecond, what we record read back the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.providers import revenuecat_events as rce

SAMPLE = {
    "api_version": "1.0",
    "event": {
        "id": "8A1B2C3D-0000-4000-8000-000000000001",
        "type": "INITIAL_PURCHASE",
        "event_timestamp_ms": 1769940000123,
        "app_user_id": "user-42",
        "original_app_user_id": "$RCAnonymousID:0f0e0d0c0b0a09080706050403020100",
        "aliases": ["$RCAnonymousID:0f0e0d0c0b0a09080706050403020100", "user-42"],
        "product_id": "com.example.pro.monthly",
        "period_type": "TRIAL",
        "purchased_at_ms": 1769940000000,
        "expiration_at_ms": 1770544800000,
        "environment": "SANDBOX",
        "store": "APP_STORE",
        "transaction_id": "510000000000001",
        "original_transaction_id": "510000000000001",
        "entitlement_ids": ["pro"],
        "price": 0.0,
        "subscriber_attributes": {"$email": {"value": "x@example.com", "updated_at_ms": 1}},
    },
}


def test_a_sample_event_is_read_field_by_field() -> None:
    event = rce.parse(json.dumps(SAMPLE).encode())
    assert event.id == "8A1B2C3D-0000-4000-8000-000000000001"
    assert (event.type, event.store, event.environment) == (
        "INITIAL_PURCHASE",
        "APP_STORE",
        "SANDBOX",
    )
    assert event.occurred_at == datetime(2026, 2, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert event.purchased_at == datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
    assert event.expires_at == datetime(2026, 2, 8, 10, 0, tzinfo=UTC)
    assert event.is_trial and not event.is_refund
    assert event.aliases[1] == "user-42"
    assert rce.from_record(rce.to_record(event)) == event


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_milliseconds_round_trip_exactly(value: int) -> None:
    assert rce.to_ms(rce.from_ms(value)) == value


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"id": 5}, "event.id"),
        ({"type": ""}, "event.type"),
        ({"event_timestamp_ms": "1769940000123"}, "event.event_timestamp_ms"),
        ({"purchased_at_ms": 10**16}, "event.purchased_at_ms"),
        ({"aliases": "user-42"}, "event.aliases"),
        ({"transferred_from": [1]}, "event.transferred_from"),
        ({"transferred_to": ["x"] * 101}, "event.transferred_to"),
        ({"store": ""}, "event.store"),
        ({"app_user_id": "user-42\n"}, "event.app_user_id"),
        ({"aliases": ["user-42\x00"]}, "event.aliases"),
    ],
)
def test_a_wrong_field_is_refused_by_name(change: dict[str, object], named: str) -> None:
    body = {"event": {**SAMPLE["event"], **change}}  # type: ignore[dict-item]
    with pytest.raises(RevenipeError) as caught:
        rce.parse(json.dumps(body).encode())
    assert caught.value.code is ErrorCode.WEBHOOK_REFUSED
    assert named in caught.value.message


def test_refunds_are_cancellations_by_customer_support() -> None:
    body = {"event": {**SAMPLE["event"], "type": "CANCELLATION", "cancel_reason": "UNSUBSCRIBE"}}
    assert not rce.parse(json.dumps(body).encode()).is_refund
    body["event"]["cancel_reason"] = "CUSTOMER_SUPPORT"
    assert rce.parse(json.dumps(body).encode()).is_refund
