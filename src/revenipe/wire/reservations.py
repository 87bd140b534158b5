"""Reservations: a hold's answer, a settle's or release's, and a reservation's state
(docs/concepts/reservations.md). The same shapes on the server API, the client
protocol's extensions and the CLI's `--json`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from revenipe.wire.common import Timestamp, TypedDict, timestamp

if TYPE_CHECKING:
    from revenipe.services.usage.reservations import CloseResult, HoldResult
    from revenipe.storage.reservations import ReservationRow


class HoldOut(TypedDict):
    success: bool
    reservation_id: str | None
    held: int
    remaining: int
    expires_at: Timestamp | None
    error: str | None


class SettleOut(TypedDict):
    success: bool
    consumed: int
    released: int
    shortfall: int
    remaining: int
    usage_event_id: str | None
    error: str | None


class ReservationOut(TypedDict):
    reservation_id: str
    client_id: str
    id: str
    access_source_id: str | None
    state: str
    """`held`, `settled`, `released` or `expired`."""
    held: int
    consumed: int
    released: int
    shortfall: int
    usage_event_id: str | None
    created_at: Timestamp
    expires_at: Timestamp
    closed_at: Timestamp | None


def hold_to_wire(result: HoldResult) -> HoldOut:
    return {
        "success": result.success,
        "reservation_id": result.reservation_id,
        "held": result.held,
        "remaining": result.remaining,
        "expires_at": timestamp(result.expires_at),
        "error": result.error,
    }


def settle_to_wire(result: CloseResult) -> SettleOut:
    return {
        "success": result.success,
        "consumed": result.consumed,
        "released": result.released,
        "shortfall": result.shortfall,
        "remaining": result.remaining,
        "usage_event_id": result.usage_event_id,
        "error": result.error,
    }


def reservation_to_wire(row: ReservationRow) -> ReservationOut:
    return {
        "reservation_id": row.id,
        "client_id": row.customer_id,
        "id": row.tracked_id,
        "access_source_id": row.access_source_id,
        "state": row.state,
        "held": row.held,
        "consumed": row.consumed,
        "released": row.released,
        "shortfall": row.shortfall,
        "usage_event_id": row.usage_event_id,
        "created_at": timestamp(row.created_at),
        "expires_at": timestamp(row.expires_at),
        "closed_at": timestamp(row.closed_at),
    }
