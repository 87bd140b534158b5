"""Track and check: the rules of docs/concepts/track.md.

A track is one write transaction: lock the customer, answer a replay if the idempotency
key was seen, settle the grants that may pay (resets, expiry), let the engine decide
(`engine.usage.decide_track`: the burn, the new balances, the ledger entries and the
usage event's outcome), write what it decided, commit. Refusals are
answers (`success: false`), recorded as usage events like successes. A check decides
the same way and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from revenipe.catalog import Catalog, EntitlementType, PricedTrack
from revenipe.engine.amounts import (
    require_amount,
    require_catalog_id,
    require_source_and_key,
)
from revenipe.engine.errors import ErrorCode, InvariantViolation, RefusalCode, RevenipeError
from revenipe.engine.grants import Grant, PendingEntry, settle
from revenipe.engine.usage import TrackDecision, decide_track, refuse_track
from revenipe.services import access, customers
from revenipe.services.access import holds
from revenipe.services.context import ServiceContext, app_time, new_id
from revenipe.services.customers import CustomerRef, locked_customer
from revenipe.services.outbound import emit as outbound_emit
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import sources as source_store
from revenipe.storage import tracks as track_store
from revenipe.storage import usage_events as usage_store


@dataclass(frozen=True, slots=True)
class TrackResult:
    """The answer to a track, in the client protocol's shape."""

    success: bool
    requested: int
    consumed: int
    remaining: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None
    usage_event_id: str | None = None
    customer_id: str | None = None
    replayed: bool = False
    action: str | None = None
    """A priced action: `entitlement_id` echoes it, and `requested`, `consumed` and
    `remaining` are in the units of the usage key it draws from."""
    unit_price: int | None = None


@dataclass(frozen=True, slots=True)
class DrawDetail:
    grant_id: str
    access_source_id: str
    entitlement_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A dry run: would the track succeed now, and which grants would pay how much."""

    would_succeed: bool
    requested: int
    available: int
    remaining_after: int
    entitlement_id: str
    access_source_id: str | None
    error: str | None
    draws: tuple[DrawDetail, ...]
    action: str | None = None
    unit_price: int | None = None


@dataclass(frozen=True, slots=True)
class _Request:
    tracked_id: str
    value: int
    access_source_id: str | None
    idempotency_key: str | None


def _validate(
    tracked_id: Any, value: Any, access_source_id: Any, idempotency_key: Any, id_field: str
) -> _Request:
    access_source_id, idempotency_key = require_source_and_key(access_source_id, idempotency_key)
    return _Request(
        tracked_id=require_catalog_id(tracked_id, field=id_field),
        value=require_amount(value, field="value"),
        access_source_id=access_source_id,
        idempotency_key=idempotency_key,
    )


@dataclass(frozen=True, slots=True)
class _Evaluation:
    """What the engine decided, and what settling the candidate grants to `now` changed
    (written whatever the decision: a reset or an expiry happened either way)."""

    decision: TrackDecision
    settlement_entries: list[PendingEntry]
    changed: list[Grant]
    priced: PricedTrack | None = None
    """Set when the id named a priced action: the decision is then the usage key's."""
    candidates: list[Grant] = field(default_factory=list)
    """Every grant that could pay, settled to the track's instant."""
    read_all: tuple[str, ...] | None = None
    """The entitlements all of whose active grants are in `candidates` (None when the
    track was restricted to one access source)."""


@dataclass(frozen=True, slots=True)
class _ReadAhead:
    """Candidate grants read with the lock: the active grants of `entitlement_ids` (of
    `source_id`, if not None)."""

    entitlement_ids: tuple[str, ...]
    source_id: str | None
    rows: list[grant_store.GrantRow]


def _candidates_ahead(
    catalog: Catalog, app_id: Any, ref: CustomerRef, request: _Request
) -> track_store.CandidateQuery | None:
    """The candidate grants' query of this track as `catalog` would decide it, or None
    when it names nothing that draws on grants there."""
    if not isinstance(app_id, str):
        return None
    tracked_id = request.tracked_id
    try:
        priced = catalog.price(tracked_id, request.value)
    except RevenipeError:
        return None  # the track decides (after its idempotency check) what to answer
    if priced is not None:
        tracked_id = priced.usage_key_id
    entitlement_ids = holds.entitlements_of(catalog, tracked_id)
    if entitlement_ids is None:
        return None
    return track_store.CandidateQuery.of(
        app_id,
        customer_id=ref.customer_id,
        external_id=None if ref.customer_id is not None else ref.external_id,
        entitlement_ids=entitlement_ids,
        source_id=request.access_source_id,
    )


def _evaluate(
    conn: Connection,
    catalog: Catalog,
    customer_id: str,
    request: _Request,
    now: datetime,
    read_ahead: _ReadAhead | None = None,
) -> _Evaluation:
    # A priced action (catalog `costs`) is decided as a track of its usage key for
    # value x price; the only place an action id is turned into units.
    priced = catalog.price(request.tracked_id, request.value)
    if priced is None:
        return _evaluate_units(conn, catalog, customer_id, request, now, read_ahead)
    units = replace(request, tracked_id=priced.usage_key_id, value=priced.units)
    evaluation = _evaluate_units(conn, catalog, customer_id, units, now, read_ahead)
    return replace(evaluation, priced=priced)


def _evaluate_units(
    conn: Connection,
    catalog: Catalog,
    customer_id: str,
    request: _Request,
    now: datetime,
    read_ahead: _ReadAhead | None = None,
) -> _Evaluation:
    def refused(refusal: RefusalCode) -> _Evaluation:
        decision = refuse_track(
            refusal,
            request.value,
            tracked_id=request.tracked_id,
            access_source_id=request.access_source_id,
        )
        return _Evaluation(decision, [], [])

    entitlement_ids: tuple[str, ...]
    entitlement = catalog.entitlements_by_id.get(request.tracked_id)
    usage_key = catalog.usage_keys_by_id.get(request.tracked_id)
    if entitlement is not None:
        if entitlement.type is not EntitlementType.METERED:
            return refused(RefusalCode.NOT_METERED)
        entitlement_ids = (entitlement.id,)
    elif usage_key is not None:
        entitlement_ids = usage_key.entitlement_ids
    else:
        return refused(RefusalCode.UNKNOWN_ENTITLEMENT)
    if (
        request.access_source_id is not None
        and source_store.get_source(conn, customer_id, request.access_source_id) is None
    ):
        return refused(RefusalCode.UNKNOWN_ACCESS_SOURCE)
    if (
        read_ahead is not None
        and read_ahead.entitlement_ids == entitlement_ids
        and read_ahead.source_id == request.access_source_id
    ):
        rows = read_ahead.rows
    else:
        rows = grant_store.list_active_grants(
            conn, customer_id, entitlement_ids=entitlement_ids, source_id=request.access_source_id
        )
    settled: list[Grant] = []
    entries: list[PendingEntry] = []
    changed: list[Grant] = []
    for row in rows:
        after, new_entries = settle(row.grant, now)
        settled.append(after)
        entries.extend(new_entries)
        if after != row.grant:
            changed.append(after)
    # Only a customer without an active candidate needs the history: did they ever hold
    # one (access_expired) or not (no_access)?
    held_before = bool(settled) or grant_store.has_grant(
        conn, customer_id, entitlement_ids, request.access_source_id
    )
    decision = decide_track(
        settled,
        request.value,
        now,
        tracked_id=request.tracked_id,
        entitlement_order=entitlement_ids,
        access_source_id=request.access_source_id,
        held_before=held_before,
    )
    return _Evaluation(
        decision,
        entries,
        changed,
        candidates=settled,
        read_all=entitlement_ids if request.access_source_id is None else None,
    )


def track(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    tracked_id: Any,
    value: Any,
    *,
    access_source_id: Any = None,
    idempotency_key: Any = None,
    create_customer: bool = False,
    id_field: str = "id",
) -> TrackResult:
    """Consume `value` of `tracked_id` (an entitlement id or a usage key) for a customer.

    All or nothing, atomic under any concurrency, and retry-safe with `idempotency_key`:
    a replay returns the original answer and changes nothing; the same key with another
    body raises `idempotency_key_reused`. Bad input raises `RevenipeError`; business
    refusals are answers with `success=False` and a `RefusalCode` in `error`.
    `id_field`: what the caller's request calls `tracked_id`, named by its errors: `id`
    in the embedded and server APIs, `entitlement_id` in the client protocol.
    """
    request = _validate(tracked_id, value, access_source_id, idempotency_key, id_field)
    job, locks = _track_job(ctx, app_id, ref, request, create_customer)
    try:
        return ctx.db.write_grouped(job, key=locks)
    except track_store.IdempotencyKeyTaken:
        # A concurrent track with the same key committed while this one waited for the
        # customer's lock (PostgreSQL's lock re-check does not refresh joined rows); the
        # unique index refused the second event. Again: this time it is a replay.
        return ctx.db.write_grouped(job, key=locks)


async def track_async(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    tracked_id: Any,
    value: Any,
    *,
    access_source_id: Any = None,
    idempotency_key: Any = None,
    create_customer: bool = False,
    id_field: str = "id",
) -> TrackResult:
    """`track` for a caller on an event loop (the server's track route): the same
    track, awaited instead of blocking a thread."""
    request = _validate(tracked_id, value, access_source_id, idempotency_key, id_field)
    job, locks = _track_job(ctx, app_id, ref, request, create_customer)
    try:
        return await ctx.db.write_grouped_async(job, key=locks)
    except track_store.IdempotencyKeyTaken:  # as in `track`
        return await ctx.db.write_grouped_async(job, key=locks)


def _track_job(
    ctx: ServiceContext, app_id: str, ref: CustomerRef, request: _Request, create_customer: bool
) -> tuple[Callable[[Connection], TrackResult], tuple[str, str | None, str | None]]:
    """The track as a job of a group commit, and what it locks (docs/adr/0015): one
    customer's tracks are decided one after another, in the order they came.

    On PostgreSQL the customer's candidate grants travel with the lock (one round trip
    less), chosen by the newest catalog this process has seen; used only if the lock
    finds that catalog current and nothing fell due. The job carries what it locks
    (`track_lock`): a batch of tracks reads it for all its jobs at once
    (`storage.track_batch`)."""
    app_key = app_id if isinstance(app_id, str) else ""
    guess = None if ctx.db.is_sqlite else ctx.catalogs.newest(app_id)
    # Locked by id once this process knows the id of the external id (`CustomerIds`).
    known = None if ref.external_id is None else ctx.customer_ids.get(app_key, ref.external_id)
    locks = ref if known is None else CustomerRef(customer_id=known)
    lock_request = track_store.TrackLockRequest(
        app_key,
        customer_id=locks.customer_id,
        external_id=locks.external_id,
        idempotency_key=request.idempotency_key,
        candidates=_candidates_ahead(guess, app_id, locks, request) if guess is not None else None,
    )

    def job(conn: Connection) -> TrackResult:
        return _track_in(conn, ctx, app_id, ref, request, create_customer, lock_request, guess)

    job.track_lock = lock_request  # type: ignore[attr-defined]
    return job, (app_key, ref.customer_id, ref.external_id)


def _track_in(
    conn: Connection,
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    request: _Request,
    create_customer: bool,
    lock_request: track_store.TrackLockRequest,
    guess: Catalog | None,
) -> TrackResult:
    """The track itself, inside the write transaction it shares with its batch."""
    # The common case, one round trip: the customer exists; lock it, read the app's
    # catalog version and clock, and any usage event already under this key.
    lock = track_store.lock_for_track(conn, lock_request)
    if lock is None:
        # No such customer yet (or, named by a remembered id, no longer: a database
        # replaced under this process): found or created by the name the caller gave.
        app = ctx.require_app(conn, app_id)
        customer = locked_customer(
            ctx, conn, app, ref, create=create_customer, now=ctx.now_for(app)
        )
        lock = track_store.lock_for_track(
            conn,
            track_store.TrackLockRequest(
                app.id,
                customer_id=customer.id,
                external_id=None,
                idempotency_key=request.idempotency_key,
            ),
        )
        if lock is None:
            raise InvariantViolation(
                f"customer {customer.id}: no track lock once the customer exists"
            )
    if ref.external_id is not None:
        ctx.customer_ids.remember(app_id, ref.external_id, lock.customer_id)
    if lock.previous is not None:
        return _replay(lock.previous, request)
    now = app_time(ctx.now(), lock.clock_offset_seconds)
    catalog = ctx.catalogs.get(conn, app_id, lock.catalog_version)
    read_ahead = None
    ahead = lock_request.candidates
    if ahead is not None and lock.candidates is not None and catalog is guess:
        read_ahead = _ReadAhead(ahead.entitlement_ids, ahead.source_id, lock.candidates)
    if lock.due_at is not None and lock.due_at <= now:
        access.catch_up(conn, catalog, lock.customer_id, now)
        read_ahead = None  # catching up may have changed them
    evaluation = _evaluate(conn, catalog, lock.customer_id, request, now, read_ahead)
    result = _record(conn, app_id, lock.customer_id, request, evaluation, now)
    # Usage alerts and webhooks, in this transaction (docs/adr/0019).
    balances = outbound_emit.TrackBalances(
        tracked_id=evaluation.decision.tracked_id,
        entitlement_ids=evaluation.read_all,
        settled=evaluation.candidates,
        debited=evaluation.decision.grants,
        catalog_version=lock.catalog_version,
        alerts_version=lock.alerts_version,
    )
    outbound_emit.after_track(
        conn,
        catalog,
        app_id,
        result,
        now,
        balances,
        evaluation.settlement_entries,
        evaluation.changed,
    )
    return result


def _asked(event: usage_store.UsageEventRow) -> tuple[str, int]:
    """The id and value the track named: a priced action's count, else the units."""
    if event.action is None or event.unit_price is None:
        return event.tracked_id, event.requested
    actions, rest = divmod(event.requested, event.unit_price)
    if rest:
        raise InvariantViolation(f"usage event {event.id}: {event.requested} at {event.unit_price}")
    return event.action, actions


def _replay(previous: usage_store.UsageEventRow, request: _Request) -> TrackResult:
    asked_id, asked_value = _asked(previous)
    same = (asked_id, asked_value, previous.access_source_id) == (
        request.tracked_id,
        request.value,
        request.access_source_id,
    )
    if not same:
        raise RevenipeError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotency key was already used for a different track "
            f"({asked_id}, value {asked_value}); use a new key",
            field="idempotency_key",
        )
    return _answer(previous, replayed=True)


def _answer(event: usage_store.UsageEventRow, *, replayed: bool) -> TrackResult:
    """The answer to a track, from the usage event that records it."""
    return TrackResult(
        success=event.success,
        requested=event.requested,
        consumed=event.consumed,
        remaining=event.remaining,
        entitlement_id=event.action or event.tracked_id,
        access_source_id=event.access_source_id,
        error=event.error,
        usage_event_id=event.id,
        customer_id=event.customer_id,
        replayed=replayed,
        action=event.action,
        unit_price=event.unit_price,
    )


def _record(
    conn: Connection,
    app_id: str,
    customer_id: str,
    request: _Request,
    evaluation: _Evaluation,
    now: datetime,
) -> TrackResult:
    decision = evaluation.decision
    priced = evaluation.priced
    event = usage_store.UsageEventRow(
        id=new_id("use"),
        app_id=app_id,
        customer_id=customer_id,
        tracked_id=decision.tracked_id,
        access_source_id=decision.access_source_id,
        requested=decision.requested,
        consumed=decision.consumed,
        reversed=0,
        remaining=decision.remaining,
        success=decision.success,
        error=decision.error,
        idempotency_key=request.idempotency_key,
        created_at=now,
        action=priced.action if priced is not None else None,
        unit_price=priced.unit_price if priced is not None else None,
    )
    # The decision's states come after settling's, so they win for a grant in both. A
    # grant that settling left as it was changes its balance only (the decision moves
    # nothing else), which is cheaper to write.
    decided = {g.id: g for g in decision.grants}
    settled = {g.id for g in evaluation.changed}
    track_store.record_track(
        conn,
        event,
        [decided.get(g.id, g) for g in evaluation.changed],
        [g for g in decision.grants if g.id not in settled],
        evaluation.settlement_entries,
        decision.entries,
    )
    return _answer(event, replayed=False)


def check(
    ctx: ServiceContext,
    app_id: str,
    ref: CustomerRef,
    tracked_id: Any,
    value: Any,
    *,
    access_source_id: Any = None,
    id_field: str = "id",
) -> CheckResult:
    """Would `track` succeed now? Which grants would pay how much? Changes nothing.
    `id_field` as in `track`."""
    request = _validate(tracked_id, value, access_source_id, None, id_field)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        customer = customer_store.find_customer(
            conn, app.id, customer_id=ref.customer_id, external_id=ref.external_id
        )
        if customer is None:
            raise RevenipeError(ErrorCode.CUSTOMER_NOT_FOUND, "no such customer in this app")
        due = customer.due_at is not None and customer.due_at <= now
    if due:
        customers.catch_up(ctx, app.id, customer.id)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
        now = ctx.now_for(app)
        evaluation = _evaluate(conn, ctx.catalog(conn, app), customer.id, request, now)
    decision = evaluation.decision
    priced = evaluation.priced
    draws = tuple(
        DrawDetail(grant.id, grant.source_id, grant.entitlement_id, -entry.amount)
        for entry, grant in zip(decision.entries, decision.grants, strict=True)
    )
    return CheckResult(
        would_succeed=decision.success,
        requested=decision.requested,
        available=decision.available,
        remaining_after=decision.remaining,
        entitlement_id=priced.action if priced is not None else decision.tracked_id,
        access_source_id=decision.access_source_id,
        error=decision.error,
        draws=draws,
        action=priced.action if priced is not None else None,
        unit_price=priced.unit_price if priced is not None else None,
    )


# --- the seam of batch track (services/usage/batch.py) ----------------------------------


TrackRequest = _Request
"""A track's input once checked (`validate_track`): what `track_job` runs."""


def validate_track(
    tracked_id: Any, value: Any, idempotency_key: Any, *, id_field: str = "id"
) -> TrackRequest:
    """Check one track's input as `track` does; bad input raises `RevenipeError`."""
    return _validate(tracked_id, value, None, idempotency_key, id_field)


def track_job(
    ctx: ServiceContext, app_id: str, ref: CustomerRef, request: TrackRequest
) -> tuple[Callable[[Connection], TrackResult], tuple[str, str | None, str | None]]:
    """One track as a write job (the customer created if new) and the key it locks, for
    `Database.write_each`; the job is the one `track` hands to group commit."""
    return _track_job(ctx, app_id, ref, request, True)


def track_alone(
    ctx: ServiceContext, app_id: str, ref: CustomerRef, request: TrackRequest
) -> TrackResult:
    """A batch item whose key another transaction took first: run as `track` does,
    where it is now a replay (or `idempotency_key_reused`)."""
    job, locks = _track_job(ctx, app_id, ref, request, True)
    return ctx.db.write_grouped(job, key=locks)
