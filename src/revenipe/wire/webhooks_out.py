"""Outbound webhooks: endpoints, deliveries with their attempts, and events read back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from revenipe.wire.common import Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.outbound.endpoints import DeliveryView
    from revenipe.storage import outbound_events as outbox
    from revenipe.storage import webhook_endpoints as endpoint_store


class WebhookEndpointOut(TypedDict):
    id: str
    url: str
    description: str | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    created_at: Timestamp


class WebhookEndpointCreated(TypedDict):
    """The new endpoint and its signing secret (shown here only)."""

    id: str
    url: str
    event_types: list[str] | None
    enabled: bool
    secret: str


class WebhookEndpointList(TypedDict):
    endpoints: list[WebhookEndpointOut]


class WebhookAttemptOut(TypedDict):
    attempted_at: Timestamp
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


class WebhookDeliveryOut(TypedDict):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempts: list[WebhookAttemptOut]
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    created_at: Timestamp


class WebhookDeliveryPage(TypedDict):
    deliveries: list[WebhookDeliveryOut]
    next_cursor: str | None


class OutboundEventOut(TypedDict):
    id: str
    type: str
    cursor: str
    body: dict[str, Any]


class OutboundEventPage(TypedDict):
    events: list[OutboundEventOut]
    next_cursor: str | None


class PingOut(TypedDict):
    event_id: str


def endpoint_to_wire(row: endpoint_store.WebhookEndpointRow) -> WebhookEndpointOut:
    types = row.types
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": list(types) if types is not None else None,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "created_at": timestamp(row.created_at),
    }


def endpoint_created_to_wire(
    row: endpoint_store.WebhookEndpointRow, secret: str
) -> WebhookEndpointCreated:
    types = row.types
    return {
        "id": row.id,
        "url": row.url,
        "event_types": list(types) if types is not None else None,
        "enabled": row.enabled,
        "secret": secret,
    }


def endpoint_list_to_wire(rows: Sequence[endpoint_store.WebhookEndpointRow]) -> WebhookEndpointList:
    return {"endpoints": [endpoint_to_wire(r) for r in rows]}


def _time(value: Any) -> Timestamp | None:
    return timestamp(value) if value is not None else None


def delivery_page_to_wire(views: Sequence[DeliveryView], limit: int) -> WebhookDeliveryPage:
    deliveries: list[WebhookDeliveryOut] = [
        {
            "id": v.delivery.id,
            "endpoint_id": v.delivery.endpoint_id,
            "event_id": v.event.id,
            "event_type": v.event.type,
            "status": v.delivery.status,
            "attempts": [
                {
                    "attempted_at": timestamp(a.attempted_at),
                    "status_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "response_excerpt": a.response_excerpt,
                    "error": a.error,
                }
                for a in v.attempts
            ],
            "next_attempt_at": _time(v.delivery.next_attempt_at)
            if v.delivery.status == "pending"
            else None,
            "delivered_at": _time(v.delivery.delivered_at),
            "created_at": timestamp(v.delivery.created_at),
        }
        for v in views
    ]
    return {
        "deliveries": deliveries,
        "next_cursor": deliveries[-1]["id"] if len(deliveries) == limit else None,
    }


def event_page_to_wire(rows: Sequence[outbox.OutboundEventRow], limit: int) -> OutboundEventPage:
    return {
        "events": [
            {"id": r.id, "type": r.type, "cursor": str(r.seq), "body": json.loads(r.body)}
            for r in rows
        ],
        "next_cursor": str(rows[-1].seq) if rows else None,
    }
