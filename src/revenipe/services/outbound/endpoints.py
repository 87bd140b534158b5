"""An app's outbound webhook endpoints, their deliveries, and its events read back."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.webhook_signing import new_secret
from revenipe.services.context import ServiceContext, new_id
from revenipe.services.outbound.emit import EVENT_TYPES, record_event
from revenipe.services.outbound.targets import TargetPolicy, resolve
from revenipe.storage import outbound_events as outbox
from revenipe.storage import webhook_endpoints as endpoint_store

MAX_ENDPOINTS_PER_APP = 20
MAX_DESCRIPTION_LENGTH = 500
ROTATION_OVERLAP = timedelta(hours=24)
"""How long the previous secret keeps signing (beside the new one) after a rotation."""
EVENTS_FINAL_WAIT_S = 2.0
"""How long listing events waits for the transactions that were writing events when it
began (PostgreSQL), before it answers `database_busy`."""


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: endpoint_store.WebhookEndpointRow
    secret: str


def _event_types(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "event_types must be a non-empty list of event types (omit it for every type)",
            field="event_types",
        )
    unknown = [t for t in value if t not in EVENT_TYPES]
    if unknown:
        shown = json.dumps(str(unknown[0]))[:80]
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown event type {shown}; known: {', '.join(EVENT_TYPES)}",
            field="event_types",
        )
    return json.dumps(sorted(set(value)))


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"description must be text of at most {MAX_DESCRIPTION_LENGTH} characters",
            field="description",
        )
    if _CONTROL_CHARACTERS.search(value):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "description must not contain control characters (newlines and tabs are fine)",
            field="description",
        )
    return value


def create_endpoint(
    ctx: ServiceContext,
    app_id: str,
    policy: TargetPolicy,
    url: Any,
    event_types: Any = None,
    description: Any = None,
) -> CreatedEndpoint:
    """A new endpoint, enabled, with a fresh signing secret (shown once: here)."""
    resolve(url, policy)
    types = _event_types(event_types)
    text = _description(description)
    with ctx.db.write() as conn:
        ctx.require_app(conn, app_id)
        if len(endpoint_store.list_endpoints(conn, app_id)) >= MAX_ENDPOINTS_PER_APP:
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, f"an app has at most {MAX_ENDPOINTS_PER_APP} endpoints"
            )
        now = ctx.now()
        secret = new_secret()
        row = endpoint_store.WebhookEndpointRow(
            id=new_id("whe"),
            app_id=app_id,
            url=str(url),
            description=text,
            event_types=types,
            secret=secret,
            previous_secret=None,
            previous_secret_expires_at=None,
            enabled=True,
            disabled_reason=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
        endpoint_store.insert_endpoint(conn, row)
    return CreatedEndpoint(row, secret)


def _require(conn: Any, app_id: str, endpoint_id: Any) -> endpoint_store.WebhookEndpointRow:
    row = None
    if isinstance(endpoint_id, str):
        row = endpoint_store.get_endpoint(conn, app_id, endpoint_id)
    if row is None:
        raise RevenipeError(ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND, "no such webhook endpoint")
    return row


def list_endpoints(ctx: ServiceContext, app_id: str) -> list[endpoint_store.WebhookEndpointRow]:
    with ctx.db.read() as conn:
        return endpoint_store.list_endpoints(conn, app_id)


def get_endpoint(
    ctx: ServiceContext, app_id: str, endpoint_id: Any
) -> endpoint_store.WebhookEndpointRow:
    with ctx.db.read() as conn:
        return _require(conn, app_id, endpoint_id)


_UNSET: Any = object()


def update_endpoint(
    ctx: ServiceContext,
    app_id: str,
    policy: TargetPolicy,
    endpoint_id: Any,
    *,
    url: Any = _UNSET,
    event_types: Any = _UNSET,
    description: Any = _UNSET,
    enabled: Any = _UNSET,
) -> endpoint_store.WebhookEndpointRow:
    """Change what is given; enabling clears the reason it was disabled."""
    changes: dict[str, Any] = {}
    if url is not _UNSET:
        resolve(url, policy)
        changes["url"] = str(url)
    if event_types is not _UNSET:
        changes["event_types"] = _event_types(event_types)
    if description is not _UNSET:
        changes["description"] = _description(description)
    if enabled is not _UNSET:
        if not isinstance(enabled, bool):
            raise RevenipeError(ErrorCode.INVALID_ARGUMENT, "enabled must be true or false")
        changes["enabled"] = enabled
        changes["disabled_reason"] = None if enabled else "disabled by the app"
        changes["failing_since"] = None
    with ctx.db.write() as conn:
        row = replace(_require(conn, app_id, endpoint_id), **changes, updated_at=ctx.now())
        endpoint_store.save_endpoint(conn, row)
    return row


def rotate_secret(ctx: ServiceContext, app_id: str, endpoint_id: Any) -> CreatedEndpoint:
    """A new secret; the previous one still signs (beside it) for `ROTATION_OVERLAP`."""
    with ctx.db.write() as conn:
        now = ctx.now()
        row = _require(conn, app_id, endpoint_id)
        secret = new_secret()
        row = replace(
            row,
            secret=secret,
            previous_secret=row.secret,
            previous_secret_expires_at=now + ROTATION_OVERLAP,
            updated_at=now,
        )
        endpoint_store.save_endpoint(conn, row)
    return CreatedEndpoint(row, secret)


def delete_endpoint(ctx: ServiceContext, app_id: str, endpoint_id: Any) -> None:
    """Delete an endpoint with its deliveries (the events stay, for `GET /v1/events`)."""
    with ctx.db.write() as conn:
        row = _require(conn, app_id, endpoint_id)
        outbox.delete_deliveries_of_endpoint(conn, row.id)
        endpoint_store.delete_endpoint(conn, app_id, row.id)


def send_ping(ctx: ServiceContext, app_id: str, endpoint_id: Any) -> str:
    """Queue a `ping` event for this endpoint alone; the event's id."""
    with ctx.db.write() as conn:
        row = _require(conn, app_id, endpoint_id)
        now = ctx.now()
        target = endpoint_store.Subscription(row.id, None, enabled=True)
        event_id = record_event(
            conn, app_id, "ping", {"endpoint_id": row.id}, now, endpoints=[target]
        )
    if event_id is None:
        raise RuntimeError("a ping to one endpoint was not recorded")
    return event_id


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: outbox.DeliveryRow
    event: outbox.OutboundEventRow
    attempts: list[outbox.AttemptRow]


def list_deliveries(
    ctx: ServiceContext, app_id: str, endpoint_id: Any, *, before_id: str | None, limit: int
) -> list[DeliveryView]:
    """An endpoint's deliveries, newest first, each with its event and every attempt."""
    with ctx.db.read() as conn:
        row = _require(conn, app_id, endpoint_id)
        deliveries = outbox.list_deliveries(conn, row.id, before_id=before_id, limit=limit)
        attempts = outbox.map_attempts(conn, [d.id for d in deliveries])
        views = []
        for d in deliveries:
            event = outbox.get_event_by_seq(conn, d.event_seq)
            if event is not None:
                views.append(DeliveryView(d, event, attempts[d.id]))
        return views


def redeliver(ctx: ServiceContext, app_id: str, delivery_id: Any) -> None:
    """Send a delivery again now, whatever its status (it keeps its `webhook-id`)."""
    with ctx.db.write() as conn:
        found = (
            outbox.get_delivery(conn, app_id, delivery_id) if isinstance(delivery_id, str) else None
        )
        if found is None:
            raise RevenipeError(ErrorCode.WEBHOOK_DELIVERY_NOT_FOUND, "no such webhook delivery")
        outbox.update_delivery_redeliver(conn, found.id, ctx.now())


def list_events(
    ctx: ServiceContext, app_id: str, *, after: int, limit: int
) -> list[outbox.OutboundEventRow]:
    """The app's events after a cursor (an event's `seq`), oldest first, none of them
    with an earlier event still to come: a reader that pages from the last cursor it saw
    misses none (docs/adr/0019).

    Up to the newest event visible now, once the transactions writing events at this
    moment have ended (`outbox.events_in_flight`): a batch of tracks, milliseconds. Each
    look is a short transaction of its own, the connection given back while waiting; one
    still writing after `EVENTS_FINAL_WAIT_S` answers `database_busy` (retry). The page
    is read in a transaction begun after that, whatever the isolation level."""
    with ctx.db.read() as conn:
        final, writers = outbox.events_in_flight(conn, app_id)
    if final is None or final <= after:
        return []
    deadline = time.monotonic() + EVENTS_FINAL_WAIT_S
    pause = 0.001
    while writers:
        if time.monotonic() >= deadline:
            raise RevenipeError(
                ErrorCode.DATABASE_BUSY,
                f"a transaction writing events has been open for more than "
                f"{EVENTS_FINAL_WAIT_S:g} s; the events after this cursor cannot be listed "
                "in order until it ends (none was skipped): retry",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        with ctx.db.read() as conn:
            writers = outbox.event_writers_left(conn, writers)
    with ctx.db.read() as conn:
        return outbox.list_events(conn, app_id, after=after, final=final, limit=limit)


def failing_for(row: endpoint_store.WebhookEndpointRow, now: datetime) -> timedelta | None:
    return None if row.failing_since is None else now - row.failing_since
