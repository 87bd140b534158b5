"""Events written in the transaction of the change that causes them (the outbox).

An event is stored, with one delivery per enabled endpoint that wants its type, only if
some endpoint of the app (enabled or not) is subscribed to the type: an app without
endpoints pays nothing. Everything here runs on the caller's connection, inside its
transaction (a track's savepoint): a change rolled back or refused takes its events
with it, and a committed one has them stored before it is answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection

from revenipe.catalog import Catalog
from revenipe.engine.alerts import Threshold, moves_any, transitions
from revenipe.engine.errors import RefusalCode
from revenipe.engine.grants import EntryKind, Grant, PendingEntry
from revenipe.services.context import new_id, utc_now
from revenipe.storage import customers as customer_store
from revenipe.storage import grants as grant_store
from revenipe.storage import outbound_events as outbox
from revenipe.storage import webhook_endpoints as endpoint_store
from revenipe.storage.reservations import ReservationRow
from revenipe.storage.sources import SourceRow


class TrackResult(Protocol):
    """What `after_track` reads of a track's answer (`services.usage.track.TrackResult`)."""

    @property
    def success(self) -> bool: ...
    @property
    def requested(self) -> int: ...
    @property
    def consumed(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def entitlement_id(self) -> str: ...
    @property
    def access_source_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def usage_event_id(self) -> str | None: ...
    @property
    def customer_id(self) -> str | None: ...


EVENT_TYPES = (
    "usage.threshold_crossed",
    "usage.threshold_recovered",
    "usage.exhausted",
    "usage.refused",
    "grant.reset",
    "grant.expired",
    "access.granted",
    "access.renewed",
    "access.canceled",
    "access.ended",
    "reservation.expired",
    "ping",
)
"""The event types emitted today (docs/concepts/webhooks-out.md)."""

REFUSED_EVERY = timedelta(minutes=1)
"""At most one `usage.refused` per customer and id in this time."""
_REFUSED_SIGNAL = "refused"


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event_body(event_type: str, now: datetime, data: Mapping[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": _timestamp(now), "data": data},
        separators=(",", ":"),
        sort_keys=False,
    )


def record_event(
    conn: Connection,
    app_id: str,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
    *,
    customer_id: str | None = None,
    endpoints: Sequence[endpoint_store.Subscription] | None = None,
) -> str | None:
    """Store one event and its deliveries; its id, or None when no endpoint wants it.

    `data` gets the customer's `sequence` number (the customer's lock must be held)."""
    if endpoints is None:
        endpoints = endpoint_store.list_subscriptions(conn, app_id)
    subscribed = [e for e in endpoints if e.wants(event_type)]
    if not subscribed:
        return None
    # The app's clock may run ahead (a sandbox test clock): deliveries are due by the
    # server's clock, which the worker reads.
    due = min(now, utc_now())
    customer_seq = None
    if customer_id is not None:
        customer_seq = outbox.next_customer_seq(conn, customer_id)
        data = {**data, "sequence": customer_seq}
    event_id = new_id("msg")
    seq = outbox.insert_event(
        conn,
        event_id=event_id,
        app_id=app_id,
        customer_id=customer_id,
        customer_seq=customer_seq,
        event_type=event_type,
        body=event_body(event_type, now, data),
        now=now,
    )
    outbox.insert_deliveries(
        conn,
        [
            outbox.DeliveryRow(
                id=new_id("whd"),
                app_id=app_id,
                endpoint_id=e.id,
                event_seq=seq,
                status=outbox.PENDING,
                attempts=0,
                next_attempt_at=due,
                last_status_code=None,
                last_error=None,
                created_at=now,
                delivered_at=None,
            )
            for e in subscribed
            if e.enabled
        ],
    )
    return event_id


# -- after a track -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackBalances:
    """What a track knew of the customer's balances, so that it can tell, without a
    read, that it crossed no threshold."""

    tracked_id: str
    """The usage key or entitlement the units were drawn from (a priced action's key)."""
    entitlement_ids: tuple[str, ...] | None
    """The entitlements whose active grants are all in `settled`; None when the track
    read only some (it was restricted to one access source)."""
    settled: Sequence[Grant]
    """Those grants, settled to the track's instant."""
    debited: Sequence[Grant]
    """The states the track gave the grants it drew from."""
    catalog_version: int
    alerts_version: int | None
    """The catalog version the customer's alert memory is current with (None: not
    known to be current)."""


def after_track(
    conn: Connection,
    catalog: Catalog,
    app_id: str,
    result: TrackResult,
    now: datetime,
    balances: TrackBalances,
    settlement: Sequence[PendingEntry] = (),
    settled: Sequence[Grant] = (),
) -> None:
    """The events a track causes: resets and expiries it settled (`settlement`, the
    entries that wrote them, of the `settled` grants), thresholds crossed or recovered
    on every alerted usage key or entitlement it touched, `usage.exhausted`,
    `usage.refused`.

    Costs nothing for a track that can cause none: no alert declared on what it moved,
    or none that its own balances show it moved past while the customer's alert memory
    is current (`moves_any`); nothing settled, not refused, not emptied. The memory is
    kept whether or not any endpoint listens, so that it is always right to skip."""
    customer_id = result.customer_id
    if customer_id is None:
        return
    targets = catalog_alert_targets(catalog, balances.tracked_id)
    exhausted = result.success and result.consumed > 0 and result.remaining == 0
    refused = result.error == RefusalCode.INSUFFICIENT_BALANCE.value
    current = balances.alerts_version == balances.catalog_version
    quiet = not settlement and not settled  # settling to now moved nothing either
    if targets and current and quiet and _crosses_nothing(catalog, targets, balances, now):
        targets = ()
    if not targets and not exhausted and not refused and not settlement:
        return
    if targets and not current:
        # First look under this catalog version: every alerted target, once, so the
        # memory is current for all of them.
        targets = tuple(sorted(catalog.alerts_by_target))
    view = None
    if targets:
        entitlements = sorted({e for t in targets for e in _entitlements_of(catalog, t)})
        view = outbox.read_alert_view(conn, app_id, customer_id, entitlements, targets, now)
        endpoints = view.subscriptions
    else:
        endpoints = endpoint_store.list_subscriptions(conn, app_id)
    emit = _Emitter(conn, app_id, customer_id, now, endpoints)
    if settlement:
        _settled(emit, settlement, settled)
    if view is not None:
        _evaluate_alerts(emit, catalog, targets, view, result.usage_event_id)
        if not current:
            customer_store.update_customer_alerts_version(
                conn, customer_id, balances.catalog_version
            )
    if exhausted:
        emit.event(
            "usage.exhausted",
            {
                "id": result.entitlement_id,
                "access_source_id": result.access_source_id,
                "remaining": 0,
                "usage_event_id": result.usage_event_id,
            },
        )
    if refused:
        _refused(emit, result)


def _crosses_nothing(
    catalog: Catalog, targets: tuple[str, ...], balances: TrackBalances, now: datetime
) -> bool:
    """Whether the track's own balances show every target's thresholds on the same side
    before and after it (the balances counted as `read_alert_view` counts them)."""
    if balances.entitlement_ids is None:
        return False
    loaded = set(balances.entitlement_ids)
    debited = {g.id: g for g in balances.debited}
    for target in targets:
        entitlement_ids = _entitlements_of(catalog, target)
        if not loaded.issuperset(entitlement_ids):
            return False
        before = after = granted = 0
        for grant in balances.settled:
            if grant.entitlement_id in entitlement_ids and grant.is_usable(now):
                before += grant.balance
                after += debited.get(grant.id, grant).balance
                granted += grant.amount
        if moves_any(catalog.alerts_by_target[target], before, after, granted):
            return False
    return True


def balances_changed(
    conn: Connection,
    catalog: Catalog,
    app_id: str,
    customer_id: str,
    now: datetime,
    settlement: Sequence[PendingEntry] = (),
    grants: Sequence[Grant] = (),
) -> None:
    """The events of a change other than a track (a hold, its settlement, release or
    expiry, a reversal, a grant, a source's change): resets and expiries among the
    `settlement` entries (of `grants`), and every alerted target's thresholds crossed
    or recovered. The caller holds the customer's lock; its ledger entries already
    marked the alert memory as not known to be current, so the next track looks too."""
    targets = tuple(sorted(catalog.alerts_by_target))
    settlement = [e for e in settlement if e.kind in _GRANT_EVENTS]
    if not targets and not settlement:
        return
    view = None
    if targets:
        entitlements = sorted({e for t in targets for e in _entitlements_of(catalog, t)})
        view = outbox.read_alert_view(conn, app_id, customer_id, entitlements, targets, now)
        endpoints = view.subscriptions
    else:
        endpoints = endpoint_store.list_subscriptions(conn, app_id)
    emit = _Emitter(conn, app_id, customer_id, now, endpoints)
    if settlement:
        missing = sorted({e.grant_id for e in settlement} - {g.id for g in grants})
        found = grant_store.map_grants_by_id(conn, missing) if missing else {}
        _settled(emit, settlement, [*grants, *(row.grant for row in found.values())])
    if view is not None:
        _evaluate_alerts(emit, catalog, targets, view, None)


class _Emitter:
    def __init__(
        self,
        conn: Connection,
        app_id: str,
        customer_id: str,
        now: datetime,
        endpoints: Sequence[endpoint_store.Subscription],
    ) -> None:
        self.conn = conn
        self.app_id = app_id
        self.customer_id = customer_id
        self.now = now
        self.endpoints = endpoints
        self._external_id: str | None = None

    def wants(self, event_type: str) -> bool:
        return any(e.wants(event_type) for e in self.endpoints)

    def event(self, event_type: str, data: dict[str, Any]) -> None:
        if not self.wants(event_type):
            return
        if self._external_id is None:
            row = customer_store.find_customer(self.conn, self.app_id, customer_id=self.customer_id)
            self._external_id = row.external_id if row is not None else ""
        full = {"client_id": self.customer_id, "customer_id": self._external_id, **data}
        record_event(
            self.conn,
            self.app_id,
            event_type,
            full,
            self.now,
            customer_id=self.customer_id,
            endpoints=self.endpoints,
        )


_TARGETS_CACHE: dict[tuple[int, str], tuple[Catalog, tuple[str, ...]]] = {}


def catalog_alert_targets(catalog: Catalog, tracked_id: str) -> tuple[str, ...]:
    """The alerted usage keys and entitlements whose balance a change to `tracked_id`
    moves: itself, its entitlements (a usage key), and every usage key sharing one.
    Remembered per catalog version (catalogs are immutable) and id."""
    if not catalog.alerts_by_target:
        return ()
    key = (id(catalog), tracked_id)
    cached = _TARGETS_CACHE.get(key)
    if cached is not None and cached[0] is catalog:
        return cached[1]
    targets = _alert_targets(catalog, tracked_id)
    if len(_TARGETS_CACHE) > 10_000:
        _TARGETS_CACHE.clear()
    _TARGETS_CACHE[key] = (catalog, targets)
    return targets


def _alert_targets(catalog: Catalog, tracked_id: str) -> tuple[str, ...]:
    alerts = catalog.alerts_by_target
    usage_key = catalog.usage_keys_by_id.get(tracked_id)
    entitlements = set(usage_key.entitlement_ids) if usage_key is not None else {tracked_id}
    related = {tracked_id, *entitlements}
    for other in catalog.usage_keys:
        if entitlements.intersection(other.entitlement_ids):
            related.add(other.id)
    return tuple(sorted(t for t in related if t in alerts))


def _entitlements_of(catalog: Catalog, target_id: str) -> tuple[str, ...]:
    key = catalog.usage_keys_by_id.get(target_id)
    return key.entitlement_ids if key is not None else (target_id,)


def _evaluate_alerts(
    emit: _Emitter,
    catalog: Catalog,
    targets: tuple[str, ...],
    view: outbox.AlertView,
    usage_event_id: str | None,
) -> None:
    """Compare each target's balance now with the thresholds remembered as crossed."""
    # The memory is kept even when no endpoint listens: a track skips this look only
    # while it is right (`after_track`).
    balances, signals = view.balances, view.crossed
    for target in targets:
        entitlement_ids = _entitlements_of(catalog, target)
        left = sum(balances.get(e, (0, 0))[0] for e in entitlement_ids)
        total = sum(balances.get(e, (0, 0))[1] for e in entitlement_ids)
        changed = transitions(
            catalog.alerts_by_target[target], signals.get(target, set()), left, total
        )
        kind = "usage_key" if target in catalog.usage_keys_by_id else "entitlement"
        for threshold in changed.crossed:
            outbox.save_signal(emit.conn, emit.customer_id, target, threshold.key, emit.now)
            emit.event(
                "usage.threshold_crossed",
                _alert_data(target, kind, threshold, left, total, usage_event_id),
            )
        for threshold in changed.recovered:
            outbox.delete_signal(emit.conn, emit.customer_id, target, threshold.key)
            emit.event(
                "usage.threshold_recovered",
                _alert_data(target, kind, threshold, left, total, usage_event_id),
            )


def _alert_data(
    target: str, kind: str, threshold: Threshold, left: int, total: int, usage_event_id: str | None
) -> dict[str, Any]:
    return {
        "id": target,
        "kind": kind,
        "threshold": threshold.to_document(),
        "remaining": left,
        "granted": total,
        "usage_event_id": usage_event_id,
    }


_GRANT_EVENTS = {EntryKind.RESET: "grant.reset", EntryKind.EXPIRED: "grant.expired"}


def _settled(emit: _Emitter, entries: Sequence[PendingEntry], grants: Sequence[Grant]) -> None:
    """`grant.reset` and `grant.expired`, as the lazy timeline writes them (at the first
    change after the boundary; `effective_at` says when it happened)."""
    by_id = {g.id: g for g in grants}
    for entry in entries:
        event_type = _GRANT_EVENTS.get(entry.kind)
        grant = by_id.get(entry.grant_id)
        if event_type is None or grant is None:
            continue
        emit.event(
            event_type,
            {
                "grant_id": grant.id,
                "entitlement_id": grant.entitlement_id,
                "access_source_id": grant.source_id,
                "amount": grant.amount,
                "change": entry.amount,
                "balance_after": entry.balance_after,
                "effective_at": _timestamp(entry.effective_at),
            },
        )


def _refused(emit: _Emitter, result: TrackResult) -> None:
    if not emit.wants("usage.refused"):
        return
    last = outbox.get_signal(emit.conn, emit.customer_id, result.entitlement_id, _REFUSED_SIGNAL)
    if last is not None and emit.now - last < REFUSED_EVERY:
        return
    outbox.save_signal(
        emit.conn, emit.customer_id, result.entitlement_id, _REFUSED_SIGNAL, emit.now
    )
    emit.event(
        "usage.refused",
        {
            "id": result.entitlement_id,
            "requested": result.requested,
            "remaining": result.remaining,
            "error": result.error,
            "access_source_id": result.access_source_id,
            "usage_event_id": result.usage_event_id,
        },
    )


# -- reservations ----------------------------------------------------------------------


def reservation_expired(conn: Connection, reservation: ReservationRow, now: datetime) -> None:
    """`reservation.expired`: a hold's TTL ran out before it was settled or released, and
    what it held went back (`released`). Written when the expiry is applied (at the
    first operation on the customer after it, docs/concepts/reservations.md);
    `expired_at` says when it happened. The caller holds the customer's lock."""
    endpoints = endpoint_store.list_subscriptions(conn, reservation.app_id)
    if not any(e.wants("reservation.expired") for e in endpoints):
        return
    _Emitter(conn, reservation.app_id, reservation.customer_id, now, endpoints).event(
        "reservation.expired",
        {
            "reservation_id": reservation.id,
            "id": reservation.tracked_id,
            "access_source_id": reservation.access_source_id,
            "held": reservation.held,
            "released": reservation.released,
            "remaining": reservation.close_remaining,
            "created_at": _timestamp(reservation.created_at),
            "expired_at": _timestamp(reservation.expires_at),
        },
    )


# -- access sources --------------------------------------------------------------------

_ENDED_STATUSES = frozenset({"canceled", "expired", "refunded", "disputed", "transferred"})


def _source_event(before: SourceRow | None, after: SourceRow) -> str | None:
    if before is None:
        return "access.granted"
    ended_now = after.status in _ENDED_STATUSES or after.ended_at is not None
    ended_before = before.status in _ENDED_STATUSES or before.ended_at is not None
    if ended_now and not ended_before:
        return "access.ended"
    if after.cancel_at_period_end and not before.cancel_at_period_end:
        return "access.canceled"
    if (
        after.current_period_start is not None
        and before.current_period_start is not None
        and after.current_period_start > before.current_period_start
    ):
        return "access.renewed"
    return None


def source_changed(
    conn: Connection, before: SourceRow | None, after: SourceRow, now: datetime
) -> None:
    """`access.granted` (a new source: purchase, subscription, default product, manual
    grant), `access.renewed` (a new period), `access.canceled` (set to end at the period
    end), `access.ended`; nothing for other changes. The caller holds the customer's lock."""
    event_type = _source_event(before, after)
    if event_type is None:
        return
    endpoints = endpoint_store.list_subscriptions(conn, after.app_id)
    if not any(e.wants(event_type) for e in endpoints):
        return
    _Emitter(conn, after.app_id, after.customer_id, now, endpoints).event(
        event_type,
        {
            "access_source_id": after.id,
            "product_id": after.product_id,
            "kind": after.kind,
            "provider": after.provider,
            "status": after.status,
            "current_period_start": _optional_time(after.current_period_start),
            "current_period_end": _optional_time(after.current_period_end),
            "expires_at": _optional_time(after.expires_at),
            "cancel_at_period_end": after.cancel_at_period_end,
            "ended_at": _optional_time(after.ended_at),
        },
    )


def _optional_time(moment: datetime | None) -> str | None:
    return _timestamp(moment) if moment is not None else None
