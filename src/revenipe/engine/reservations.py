"""The bookkeeping of a reservation: a hold, and how it closes (docs/concepts/reservations.md).

A **hold** draws like a track (same grants, same burn order, all or nothing) but writes
`held` entries instead of `consumed` ones: the units leave the grants' balances, so they
are out of `remaining` for every later track, check or read, with no change to those.

A reservation **closes** once: settled, released or expired. Closing always gives the
whole hold back to the grants that held it (`released`, per grant); a settle then
consumes the actual amount with ordinary `consumed` entries of one usage event:

- first from the held units, grant by grant in the order they were held (so settling
  less leaves exactly the draws a hold of the smaller value would have made);
- beyond the hold, the difference is drawn like a track from the grants usable at the
  close (all or nothing); if they cannot pay it, the settle consumes the held amount and
  reports the difference as `shortfall`.

Held units belong to the period they were held in. A grant whose period ended while
units were held (it reset, expired or was revoked) gets the unconsumed rest back into
that ended period, which no longer pays: the rest is written off at once by an entry of
the kind that ended the period (`reset`, `expired`, `revoked`). Nothing is created (a
hold cannot carry units across a reset) and nothing vanishes from the ledger.

`decide_hold` and `decide_close` are pure: given grants as stored, they return every
grant state and ledger entry to write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from revenipe.engine.burn import decide_burn, order_grants
from revenipe.engine.errors import ErrorCode, InvariantViolation, RefusalCode, RevenipeError
from revenipe.engine.grants import EntryKind, Grant, GrantStatus, PendingEntry, settle
from revenipe.engine.usage import decide_track

DEFAULT_TTL_SECONDS = 600
"""A hold's time to live when the caller names none: 10 minutes."""
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 86_400
"""At most 24 hours: a hold is for work in progress, not a budget."""


class ReservationState:
    """A reservation's state, as sent on the wire. `held` is the only open one."""

    HELD = "held"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"

    CLOSED = frozenset({SETTLED, RELEASED, EXPIRED})


def require_ttl(ttl_seconds: object) -> int:
    """The TTL in seconds (default when None), else `invalid_argument`."""
    if ttl_seconds is None:
        return DEFAULT_TTL_SECONDS
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int)
        or not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"ttl_seconds must be an integer from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}, "
            f"got {ttl_seconds!r}",
            field="ttl_seconds",
        )
    return ttl_seconds


def expiry_of(now: datetime, ttl_seconds: int) -> datetime:
    """When a hold made at `now` expires."""
    return now + timedelta(seconds=ttl_seconds)


# --- hold ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldDecision:
    """Everything a hold changes. A refusal holds nothing: `grants` and `entries` empty."""

    requested: int
    available: int
    """What the grants that may pay held in total before the hold."""
    refusal: RefusalCode | None
    grants: tuple[Grant, ...] = ()
    """The new state of each grant debited, in burn order."""
    entries: tuple[PendingEntry, ...] = ()
    """One `held` entry per grant debited, in burn order."""

    @property
    def success(self) -> bool:
        """Whether `requested` was held (else nothing was)."""
        return self.refusal is None

    @property
    def held(self) -> int:
        """Units set aside: `requested` on success, 0 on a refusal."""
        return -sum(e.amount for e in self.entries)

    @property
    def remaining(self) -> int:
        """The balance of what was held after the hold (usable grants only)."""
        return self.available - self.held


def decide_hold(
    grants: Sequence[Grant],
    value: int,
    now: datetime,
    *,
    tracked_id: str,
    entitlement_order: Sequence[str],
    access_source_id: str | None = None,
    held_before: bool = False,
) -> HoldDecision:
    """Decide a hold of `value` units: exactly what `decide_track` would consume, set
    aside instead (entries of kind `held`). Same arguments, same refusals."""
    track = decide_track(
        grants,
        value,
        now,
        tracked_id=tracked_id,
        entitlement_order=entitlement_order,
        access_source_id=access_source_id,
        held_before=held_before,
    )
    entries = tuple(replace(e, kind=EntryKind.HELD) for e in track.entries)
    return HoldDecision(value, track.available, track.refusal, track.grants, entries)


# --- close ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldPart:
    """What one grant set aside for a reservation, and when (its `held` entry)."""

    grant_id: str
    units: int
    held_at: datetime


@dataclass(frozen=True, slots=True)
class CloseDecision:
    """Everything closing a reservation changes, and the numbers of its answer."""

    held: int
    requested: int
    """What the settle asked to consume (0 for a release or an expiry)."""
    consumed: int
    """Units consumed: from the hold first, then beyond it; never more than requested."""
    released: int
    """Held units not consumed (given back, or written off if their period ended)."""
    shortfall: int
    """What the settle asked beyond the hold and the grants could not pay (else 0)."""
    remaining: int
    """The balance of what was held, over the grants usable at `now`, after the close."""
    grants: tuple[Grant, ...]
    """The new state of every grant touched."""
    entries: tuple[PendingEntry, ...]
    """In the order to append: settlement to the close, per held grant `released` /
    `consumed` / write-off, `consumed` of the grants beyond the hold, settlement from
    the close to `now`."""

    @property
    def consumption(self) -> tuple[PendingEntry, ...]:
        """The `consumed` entries: those of the settle's usage event."""
        return tuple(e for e in self.entries if e.kind is EntryKind.CONSUMED)


_ENDED_BY = {GrantStatus.EXPIRED: EntryKind.EXPIRED, GrantStatus.REVOKED: EntryKind.REVOKED}


class _Grants:
    """The grants a close touches, each settled to the close on first use, and every
    entry written so far in the order to append."""

    def __init__(self, stored: Mapping[str, Grant], at: datetime) -> None:
        self.stored = stored
        self.at = at
        self.states: dict[str, Grant] = {}
        self.entries: list[PendingEntry] = []

    def get(self, grant_id: str) -> Grant:
        if grant_id in self.states:
            return self.states[grant_id]
        stored = self.stored.get(grant_id)
        if stored is None:
            raise InvariantViolation(f"grant {grant_id} was not given to decide_close")
        settled, settlement = settle(stored, self.at)
        self.entries.extend(settlement)
        self.states[grant_id] = settled
        return settled

    def change(self, grant_id: str, kind: EntryKind, amount: int) -> None:
        grant = self.states[grant_id]
        balance = grant.balance + amount
        self.entries.append(PendingEntry(grant_id, kind, amount, balance, self.at))
        self.states[grant_id] = replace(grant, balance=balance)

    def settle_all(self, now: datetime) -> None:
        for grant_id, grant in list(self.states.items()):
            settled, settlement = settle(grant, now)
            self.entries.extend(settlement)
            self.states[grant_id] = settled
            if settled.balance < 0 or (
                settled.status is not GrantStatus.ACTIVE and settled.balance
            ):
                raise InvariantViolation(f"a close left grant {grant_id} holding {settled.balance}")


def decide_close(
    parts: Sequence[HeldPart],
    grants: Mapping[str, Grant],
    value: int,
    at: datetime,
    now: datetime,
    *,
    candidates: Sequence[str],
    entitlement_order: Sequence[str],
) -> CloseDecision:
    """Close a reservation at `at`, consuming `value` units (0: a release or an expiry).

    `parts` are the reservation's held parts in the order held; `grants` the stored
    (not yet settled) state of every grant held and every candidate; `candidates` the
    ids of the grants that may pay for the reserved id now (its active grants), which
    also decide `remaining`. `at` is the instant of the close (`now`, or the
    reservation's expiry when it is found expired later); every grant touched is
    settled to `at` before and to `now` after.
    """
    _require_close(parts, value, at, now)
    held = sum(p.units for p in parts)
    touched = _Grants(grants, at)
    from_hold = min(value, held)
    from_parts = _consume_from_parts(parts, from_hold)
    write_offs = _write_offs(parts, from_parts, touched)
    beyond = value - from_hold
    extra = _draw_beyond(
        parts, from_parts, write_offs, touched, beyond, candidates, entitlement_order
    )
    shortfall = beyond if extra is None else 0
    extra = dict(extra or {})
    # The entries, grant by grant: all of the part back, what is consumed of it (and
    # beyond it) in one entry, and the unconsumed rest written off if its period ended.
    for part in parts:
        touched.change(part.grant_id, EntryKind.RELEASED, part.units)
        spent = from_parts[part.grant_id] + extra.pop(part.grant_id, 0)
        if spent:
            touched.change(part.grant_id, EntryKind.CONSUMED, -spent)
        if part.grant_id in write_offs:
            kind, rest = write_offs[part.grant_id]
            touched.change(part.grant_id, kind, -rest)
    for grant_id, spent in extra.items():
        touched.change(grant_id, EntryKind.CONSUMED, -spent)
    for grant_id in candidates:
        touched.get(grant_id)
    # Then on to now (an expiry found late: resets after it see the released units).
    touched.settle_all(now)
    states = touched.states
    decision = CloseDecision(
        held=held,
        requested=value,
        consumed=value - shortfall,
        released=held - from_hold,
        shortfall=shortfall,
        remaining=sum(states[g].balance for g in set(candidates) if states[g].is_usable(now)),
        grants=tuple(states.values()),
        entries=tuple(touched.entries),
    )
    if -sum(e.amount for e in decision.consumption) != decision.consumed:
        raise InvariantViolation(
            f"a close consumed {decision.consumption}, not {decision.consumed}"
        )
    return decision


def _require_close(parts: Sequence[HeldPart], value: int, at: datetime, now: datetime) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvariantViolation(f"a settle's value must be an integer >= 0, got {value!r}")
    if at > now:
        raise InvariantViolation(f"a reservation closes at {at}, after now {now}")
    if len({p.grant_id for p in parts}) != len(parts) or any(p.units <= 0 for p in parts):
        raise InvariantViolation(f"a reservation's held parts are malformed: {parts}")


def _consume_from_parts(parts: Sequence[HeldPart], units: int) -> dict[str, int]:
    """What each held part pays of `units`: first held, first consumed."""
    left = units
    taken = {}
    for part in parts:
        taken[part.grant_id] = min(part.units, left)
        left -= taken[part.grant_id]
    return taken


def _write_offs(
    parts: Sequence[HeldPart], from_parts: Mapping[str, int], touched: _Grants
) -> dict[str, tuple[EntryKind, int]]:
    """The unconsumed rest of each part whose grant's period ended since it was held
    (the grant reset, expired or was revoked): kind of the end, units."""
    ended: dict[str, tuple[EntryKind, int]] = {}
    for part in parts:
        grant = touched.get(part.grant_id)
        kind = _ENDED_BY.get(grant.status)
        if kind is None and grant.period_start > part.held_at:
            kind = EntryKind.RESET
        rest = part.units - from_parts[part.grant_id]
        if kind is not None and rest:
            ended[part.grant_id] = (kind, rest)
    return ended


def _draw_beyond(
    parts: Sequence[HeldPart],
    from_parts: Mapping[str, int],
    write_offs: Mapping[str, tuple[EntryKind, int]],
    touched: _Grants,
    beyond: int,
    candidates: Sequence[str],
    entitlement_order: Sequence[str],
) -> dict[str, int] | None:
    """Units drawn beyond the hold, per grant, like a track (all or nothing) from the
    candidates once the hold is back; None when they cannot pay `beyond`."""
    if not beyond:
        return {}
    payers = []
    for grant_id in candidates:
        grant = touched.get(grant_id)
        if grant_id not in write_offs:
            back = _part_units(parts, grant_id) - from_parts.get(grant_id, 0)
            grant = replace(grant, balance=grant.balance + back)
        payers.append(grant)
    burn = decide_burn(order_grants(payers, entitlement_order), beyond, touched.at)
    if not burn.success:
        return None
    return {draw.grant_id: draw.amount for draw in burn.draws}


def _part_units(parts: Sequence[HeldPart], grant_id: str) -> int:
    return sum(p.units for p in parts if p.grant_id == grant_id)
