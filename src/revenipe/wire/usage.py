"""Usage: the client protocol's track result, the server API's track, check, reversal
and usage history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from revenipe.engine.errors import ErrorCode, InvariantViolation
from revenipe.wire.common import Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.usage.batch import BatchOutcome
    from revenipe.services.usage.reversal import ReversalResult
    from revenipe.services.usage.track import CheckResult, TrackResult
    from revenipe.storage import usage_events as usage_store


class TrackResultOut(TypedDict):
    success: bool
    requested: int
    consumed: int
    remaining: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None


class ApiTrackOut(TrackResultOut):
    usage_event_id: str
    client_id: str
    action: str | None
    """The priced action tracked (then `entitlement_id` echoes it and the amounts are
    the usage key's units), else null."""
    unit_price: int | None


class TrackRecorded(TrackResultOut):
    """The command line's track: the result and the usage event that records it."""

    usage_event_id: str | None
    action: str | None
    unit_price: int | None


class ItemErrorOut(TypedDict):
    code: str
    message: str
    field: str | None


class TrackBatchItemOut(TypedDict):
    status: int
    """The HTTP status this item would have had alone: 200, or its error's (4xx)."""
    replayed: bool
    """The item's idempotency key was already applied: `result` is the first answer."""
    result: ApiTrackOut | None
    error: ItemErrorOut | None


class TrackBatchOut(TypedDict):
    items: list[TrackBatchItemOut]


class DrawOut(TypedDict):
    grant_id: str
    access_source_id: str
    entitlement_id: str
    amount: int


class CheckOut(TypedDict):
    would_succeed: bool
    requested: int
    available: int
    remaining_after: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None
    draws: list[DrawOut]
    action: str | None
    unit_price: int | None


class ReversalOut(TypedDict):
    reversal_id: str | None
    usage_event_id: str
    amount: int
    total_reversed: int
    credits: list[dict[str, Any]]


class UsageEventOut(TypedDict):
    usage_event_id: str
    client_id: str
    id: str
    access_source_id: str | None
    requested: int
    consumed: int
    reversed: int
    remaining: int
    success: bool
    error: str | None
    idempotency_key: str | None
    created_at: Timestamp
    action: str | None
    """A priced action: `id` is then the usage key it drew from, `requested` its units."""
    unit_price: int | None


class UsageEventList(TypedDict):
    usage_events: list[UsageEventOut]
    next_cursor: str | None


def track_result_to_wire(result: TrackResult) -> TrackResultOut:
    """The client protocol's track result object (exact field set)."""
    return {
        "success": result.success,
        "requested": result.requested,
        "consumed": result.consumed,
        "remaining": result.remaining,
        "entitlement_id": result.entitlement_id,
        "access_source_id": result.access_source_id,
        "error": result.error,
    }


def api_track_to_wire(result: TrackResult) -> ApiTrackOut:
    """The server API's track: the result, its usage event and the customer's id."""
    if result.usage_event_id is None or result.customer_id is None:
        raise InvariantViolation("a track through the server API records a usage event")
    return {
        **track_result_to_wire(result),
        "usage_event_id": result.usage_event_id,
        "client_id": result.customer_id,
        "action": result.action,
        "unit_price": result.unit_price,
    }


def track_batch_to_wire(
    outcomes: Sequence[BatchOutcome], status_of: Callable[[ErrorCode], int]
) -> TrackBatchOut:
    """A batch track's answer: per item, in order, its track or its error."""
    items: list[TrackBatchItemOut] = []
    for outcome in outcomes:
        if outcome.result is not None:
            result = api_track_to_wire(outcome.result)
            items.append(
                {
                    "status": 200,
                    "replayed": outcome.result.replayed,
                    "result": result,
                    "error": None,
                }
            )
        elif outcome.error is not None:
            error = outcome.error
            items.append(
                {
                    "status": status_of(error.code),
                    "replayed": False,
                    "result": None,
                    "error": {
                        "code": error.code.value,
                        "message": error.message,
                        "field": error.field,
                    },
                }
            )
        else:
            raise InvariantViolation("a batch item without a result or an error")
    return {"items": items}


def track_recorded_to_wire(result: TrackResult) -> TrackRecorded:
    return {
        **track_result_to_wire(result),
        "usage_event_id": result.usage_event_id,
        "action": result.action,
        "unit_price": result.unit_price,
    }


def check_to_wire(result: CheckResult) -> CheckOut:
    return {
        "would_succeed": result.would_succeed,
        "requested": result.requested,
        "available": result.available,
        "remaining_after": result.remaining_after,
        "entitlement_id": result.entitlement_id,
        "access_source_id": result.access_source_id,
        "error": result.error,
        "draws": [
            {
                "grant_id": d.grant_id,
                "access_source_id": d.access_source_id,
                "entitlement_id": d.entitlement_id,
                "amount": d.amount,
            }
            for d in result.draws
        ],
        "action": result.action,
        "unit_price": result.unit_price,
    }


def reversal_to_wire(result: ReversalResult) -> ReversalOut:
    return {
        "reversal_id": result.reversal_id,
        "usage_event_id": result.usage_event_id,
        "amount": result.amount,
        "total_reversed": result.total_reversed,
        "credits": [{"grant_id": g, "amount": a} for g, a in result.credits],
    }


def usage_event_to_wire(event: usage_store.UsageEventRow) -> UsageEventOut:
    return {
        "usage_event_id": event.id,
        "client_id": event.customer_id,
        "id": event.tracked_id,
        "access_source_id": event.access_source_id,
        "requested": event.requested,
        "consumed": event.consumed,
        "reversed": event.reversed,
        "remaining": event.remaining,
        "success": event.success,
        "error": event.error,
        "idempotency_key": event.idempotency_key,
        "created_at": timestamp(event.created_at),
        "action": event.action,
        "unit_price": event.unit_price,
    }


def usage_event_list_to_wire(
    events: Sequence[usage_store.UsageEventRow], limit: int
) -> UsageEventList:
    """A page of usage events, newest first; `next_cursor` is set when the page is full."""
    return {
        "usage_events": [usage_event_to_wire(e) for e in events],
        "next_cursor": events[-1].id if len(events) == limit else None,
    }
