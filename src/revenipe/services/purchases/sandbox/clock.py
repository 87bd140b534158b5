"""A sandbox app's test clock: it moves one app's time forward (as Stripe's test clocks
do), so renewals, trial ends and expiry happen in seconds. Time only moves forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.context import ServiceContext
from revenipe.storage import apps as app_store

# --- the test clock ----------------------------------------------------------------------

MAX_ADVANCE_SECONDS = 10 * 366 * 86_400


@dataclass(frozen=True, slots=True)
class ClockState:
    app_id: str
    now: datetime
    clock_offset_seconds: int


def _sandbox_app(ctx: ServiceContext, conn: Connection, app_id: str) -> app_store.AppRow:
    app = ctx.require_app(conn, app_id)
    if not app.sandbox:
        raise RevenipeError(
            ErrorCode.SANDBOX_ONLY,
            "only sandbox apps have a test clock (create one with `revenipe apps create "
            "--sandbox`)",
        )
    return app


def clock(ctx: ServiceContext, app_id: str) -> ClockState:
    with ctx.db.read() as conn:
        app = _sandbox_app(ctx, conn, app_id)
        return ClockState(app.id, ctx.now_for(app), app.clock_offset_seconds)


def advance_clock(ctx: ServiceContext, app_id: str, seconds: Any) -> ClockState:
    """Move a sandbox app's time forward by `seconds`; what falls due happens lazily."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 0 < seconds <= MAX_ADVANCE_SECONDS
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"advance by a whole number of seconds from 1 to {MAX_ADVANCE_SECONDS} "
            "(10 years) at a time; time only moves forward",
            field="seconds",
        )
    with ctx.db.write() as conn:
        _sandbox_app(ctx, conn, app_id)
        app_store.update_app_clock(conn, app_id, seconds)
        app = ctx.require_app(conn, app_id)
        return ClockState(app.id, ctx.now_for(app), app.clock_offset_seconds)
