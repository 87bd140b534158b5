"""Batch track: many tracks in one call, each decided exactly as if alone, safe to retry.

Each item is `{"customer", "id", "value", "idempotency_key"}` (the customer by the app's
external id, created if new, as on the server API's single track). The stages:

1. **The batch as a whole** (`invalid_batch`, nothing applied): 1 to `MAX_BATCH_ITEMS`
   items, each with an idempotency key. The key is what makes a retried batch (a client
   time-out, a 503) charge every item once: without it a retry would track again.
2. **Each item's input**, as `track` checks it: a bad item is that item's error.
3. **The tracks**, as write jobs of `track` itself (`track.track_job`), run in shared
   transactions by `Database.write_each` (each item behind its own savepoint, so one
   item's error rolls back that item only), items of one customer in the order given.
4. **The answers**, in the order of the items: a `TrackResult` (success, refusal or
   replay) or the `RevenipeError` that item alone raised.

Two items of one customer under one key are one track: the second replays the first
(or is `idempotency_key_reused` if its body differs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.services.context import ServiceContext
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import track as track_service
from revenipe.services.usage.track import TrackResult
from revenipe.storage import tracks as track_store

MAX_BATCH_ITEMS = 1000
"""Items per batch: a bound on one request's time and on what a retry replays."""


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One track of a batch, as sent (checked by `track_batch`)."""

    customer: Any
    """The app's external id of the customer (created if new)."""
    id: Any
    value: Any
    idempotency_key: Any


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item's answer: its track's result, or the error it alone raised."""

    result: TrackResult | None = None
    error: RevenipeError | None = None


def track_batch(ctx: ServiceContext, app_id: str, items: Sequence[BatchItem]) -> list[BatchOutcome]:
    """Track every item as `track` would, in shared transactions; one outcome per item,
    in order. Raises `invalid_batch` (nothing applied) when the batch as a whole is
    unacceptable; a database fault raises too (retry the batch: applied items replay)."""
    _require_batch(items)
    outcomes: list[BatchOutcome | None] = [None] * len(items)
    jobs: list[tuple[Callable[[Connection], TrackResult], Any]] = []
    prepared: list[tuple[int, CustomerRef, track_service.TrackRequest]] = []
    for index, item in enumerate(items):
        try:
            ref = CustomerRef.external(item.customer)
            request = track_service.validate_track(item.id, item.value, item.idempotency_key)
        except RevenipeError as exc:
            outcomes[index] = BatchOutcome(error=exc)
            continue
        prepared.append((index, ref, request))
        jobs.append(track_service.track_job(ctx, app_id, ref, request))
    ran = ctx.db.write_each(jobs)
    for (index, ref, request), outcome in zip(prepared, ran, strict=True):
        if isinstance(outcome, track_store.IdempotencyKeyTaken):
            # A concurrent track committed under the same key first: now a replay.
            try:
                outcome = track_service.track_alone(ctx, app_id, ref, request)
            except RevenipeError as exc:
                outcome = exc
        if isinstance(outcome, RevenipeError):
            outcomes[index] = BatchOutcome(error=outcome)
        elif isinstance(outcome, Exception):
            raise outcome  # a bug or a fault, not this item's input: the batch fails
        else:
            outcomes[index] = BatchOutcome(result=outcome)
    return [_answered(o) for o in outcomes]


def _require_batch(items: Sequence[BatchItem]) -> None:
    if not items:
        raise RevenipeError(ErrorCode.INVALID_BATCH, "a batch needs at least one item")
    if len(items) > MAX_BATCH_ITEMS:
        raise RevenipeError(
            ErrorCode.INVALID_BATCH,
            f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}: split it",
        )
    for index, item in enumerate(items):
        if item.idempotency_key is None:
            raise RevenipeError(
                ErrorCode.INVALID_BATCH,
                f"items[{index}] has no idempotency_key: every item needs one, so that "
                "retrying the batch charges nothing twice",
                field=f"items[{index}].idempotency_key",
            )


def _answered(outcome: BatchOutcome | None) -> BatchOutcome:
    if outcome is None:
        raise InvariantViolation("a batch item was left without an answer")
    return outcome
