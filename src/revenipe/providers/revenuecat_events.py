"""RevenueCat's webhook events, read without I/O: the body's JSON checked field by field
into an `Event`, and back and forth to the JSON we record it as.

Only the fields we use are read (RevenueCat adds fields over time; the rest is
ignored). Instants are RevenueCat's `*_ms` fields (milliseconds since the epoch, UTC).
A body that is not a RevenueCat event is refused with `webhook_refused`, naming the
field that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload

from revenipe.engine.errors import ErrorCode, RevenipeError

MAX_ID_LENGTH = 255
MAX_USER_IDS = 100
"""At most this many app user ids in `aliases`, `transferred_from`, `transferred_to`."""
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

APP_STORE_STORES = frozenset({"APP_STORE", "MAC_APP_STORE"})
PLAY_STORE_STORES = frozenset({"PLAY_STORE"})

SUBSCRIPTION_TYPES = frozenset(
    {
        "INITIAL_PURCHASE",
        "RENEWAL",
        "CANCELLATION",
        "UNCANCELLATION",
        "EXPIRATION",
        "BILLING_ISSUE",
        "PRODUCT_CHANGE",
        "SUBSCRIPTION_EXTENDED",
    }
)
"""Events that carry a subscription's state as of their `event_timestamp_ms`."""
PURCHASE_TYPES = frozenset({"NON_RENEWING_PURCHASE", "CANCELLATION"})
"""Events of a one-time purchase (a CANCELLATION of one is its refund)."""
REFUND_REASON = "CUSTOMER_SUPPORT"
"""RevenueCat's `cancel_reason` of a refund (the store gave the money back)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One RevenueCat event, with the fields we act on."""

    id: str
    type: str
    occurred_at: datetime
    """`event_timestamp_ms`: the state the event carries is as of then."""
    app_user_id: str | None = None
    original_app_user_id: str | None = None
    aliases: tuple[str, ...] = ()
    store: str | None = None
    environment: str | None = None
    product_id: str | None = None
    new_product_id: str | None = None
    period_type: str | None = None
    purchased_at: datetime | None = None
    expires_at: datetime | None = None
    """`expiration_at_ms`: the end of the period paid (or on trial) through."""
    transaction_id: str | None = None
    original_transaction_id: str | None = None
    cancel_reason: str | None = None
    expiration_reason: str | None = None
    transferred_from: tuple[str, ...] = ()
    transferred_to: tuple[str, ...] = ()

    @property
    def is_refund(self) -> bool:
        return self.type == "CANCELLATION" and self.cancel_reason == REFUND_REASON

    @property
    def is_trial(self) -> bool:
        return self.period_type == "TRIAL"


def _refused(message: str) -> RevenipeError:
    return RevenipeError(ErrorCode.WEBHOOK_REFUSED, message)


@overload
def _text(values: dict[str, Any], name: str, *, required: Literal[True]) -> str: ...


@overload
def _text(values: dict[str, Any], name: str, *, required: bool = False) -> str | None: ...


def _text(values: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = values.get(name)
    if value is None:
        if required:
            raise _refused(f"event.{name} is missing")
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_ID_LENGTH
        or any(ord(c) < 32 for c in value)
    ):
        raise _refused(
            f"event.{name} must be a string of 1 to {MAX_ID_LENGTH} characters, without "
            "control characters"
        )
    return value


def _instant(values: dict[str, Any], name: str, *, required: bool = False) -> datetime | None:
    value = values.get(name)
    if value is None:
        if required:
            raise _refused(f"event.{name} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise _refused(f"event.{name} must be milliseconds since the epoch (an integer)")
    return from_ms(value)


def _user_ids(values: dict[str, Any], name: str) -> tuple[str, ...]:
    value = values.get(name)
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_USER_IDS
        or not all(
            isinstance(v, str) and 0 < len(v) <= MAX_ID_LENGTH and all(ord(c) >= 32 for c in v)
            for v in value
        )
    ):
        raise _refused(
            f"event.{name} must be a list of at most {MAX_USER_IDS} app user ids (strings of "
            f"1 to {MAX_ID_LENGTH} characters)"
        )
    return tuple(value)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1000, UTC).replace(microsecond=(value % 1000) * 1000)


def to_ms(value: datetime) -> int:
    return int(value.timestamp()) * 1000 + value.microsecond // 1000


def parse(payload: bytes) -> Event:
    """The event in a webhook body (`{"api_version": ..., "event": {...}}`)."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _refused("the body is not JSON") from None
    values = document.get("event") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise _refused("the body has no `event` object: not a RevenueCat webhook")
    return _event(values)


def _event(values: dict[str, Any]) -> Event:
    event_id = _text(values, "id", required=True)
    event_type = _text(values, "type", required=True)
    return Event(
        id=event_id,
        type=event_type,
        occurred_at=_instant(values, "event_timestamp_ms", required=True) or from_ms(0),
        app_user_id=_text(values, "app_user_id"),
        original_app_user_id=_text(values, "original_app_user_id"),
        aliases=_user_ids(values, "aliases"),
        store=_text(values, "store"),
        environment=_text(values, "environment"),
        product_id=_text(values, "product_id"),
        new_product_id=_text(values, "new_product_id"),
        period_type=_text(values, "period_type"),
        purchased_at=_instant(values, "purchased_at_ms"),
        expires_at=_instant(values, "expiration_at_ms"),
        transaction_id=_text(values, "transaction_id"),
        original_transaction_id=_text(values, "original_transaction_id"),
        cancel_reason=_text(values, "cancel_reason"),
        expiration_reason=_text(values, "expiration_reason"),
        transferred_from=_user_ids(values, "transferred_from"),
        transferred_to=_user_ids(values, "transferred_to"),
    )


def to_record(event: Event) -> dict[str, Any]:
    """The event as we keep it (the fields we use, in RevenueCat's own names)."""
    record: dict[str, Any] = {"id": event.id, "type": event.type}
    record["event_timestamp_ms"] = to_ms(event.occurred_at)
    for name, value in (
        ("app_user_id", event.app_user_id),
        ("original_app_user_id", event.original_app_user_id),
        ("store", event.store),
        ("environment", event.environment),
        ("product_id", event.product_id),
        ("new_product_id", event.new_product_id),
        ("period_type", event.period_type),
        ("transaction_id", event.transaction_id),
        ("original_transaction_id", event.original_transaction_id),
        ("cancel_reason", event.cancel_reason),
        ("expiration_reason", event.expiration_reason),
    ):
        if value is not None:
            record[name] = value
    if event.purchased_at is not None:
        record["purchased_at_ms"] = to_ms(event.purchased_at)
    if event.expires_at is not None:
        record["expiration_at_ms"] = to_ms(event.expires_at)
    for name, ids in (
        ("aliases", event.aliases),
        ("transferred_from", event.transferred_from),
        ("transferred_to", event.transferred_to),
    ):
        if ids:
            record[name] = list(ids)
    return record


def from_record(record: dict[str, Any]) -> Event:
    """An event as `to_record` kept it."""
    return _event(record)
