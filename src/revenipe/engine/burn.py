"""Which grants pay for a track, in which order, and how much each.

The order (docs/concepts/track.md#burn-order): for a usage key, entitlement by
entitlement in the key's declared order; within one entitlement, lower `priority`
first, then soonest expiry (never-expiring last), then oldest grant, then id. All or
nothing: if the grants that may pay hold less than the value in total, nothing is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from revenipe.engine.errors import RefusalCode
from revenipe.engine.grants import Grant

_FAR_FUTURE_KEY = (1, datetime.max.isoformat())


def burn_order_key(grant: Grant, entitlement_rank: int = 0) -> tuple[object, ...]:
    """Sort key of the documented burn order."""
    expiry = (0, grant.expires_at.isoformat()) if grant.expires_at else _FAR_FUTURE_KEY
    return (entitlement_rank, grant.priority, expiry, grant.created_at, grant.id)


def order_grants(grants: Sequence[Grant], entitlement_order: Sequence[str]) -> list[Grant]:
    """`grants` in burn order; `entitlement_order` ranks the entitlements of a usage key."""
    rank = {entitlement_id: i for i, entitlement_id in enumerate(entitlement_order)}
    return sorted(grants, key=lambda g: burn_order_key(g, rank.get(g.entitlement_id, len(rank))))


@dataclass(frozen=True, slots=True)
class Draw:
    """How much one grant pays."""

    grant_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class BurnDecision:
    """The outcome of asking the ordered grants for `requested` units."""

    requested: int
    draws: tuple[Draw, ...]
    available: int
    """Total the usable grants held before this decision."""
    refusal: RefusalCode | None = None

    @property
    def success(self) -> bool:
        """Whether the track is paid in full; a refused one draws nothing."""
        return self.refusal is None

    @property
    def consumed(self) -> int:
        """Units drawn, over all grants: `requested` on success, 0 when refused."""
        return sum(d.amount for d in self.draws)

    @property
    def remaining(self) -> int:
        """Units the usable grants hold after this decision's draws."""
        return self.available - self.consumed


def decide_burn(ordered: Sequence[Grant], requested: int, now: datetime) -> BurnDecision:
    """Take `requested` from `ordered` (already in burn order and settled to `now`).

    Grants that are not usable at `now` are skipped. If the usable grants hold less than
    `requested`, nothing is drawn and the refusal is `insufficient_balance`.
    """
    usable = [g for g in ordered if g.is_usable(now)]
    available = sum(g.balance for g in usable)
    if available < requested:
        return BurnDecision(requested, (), available, RefusalCode.INSUFFICIENT_BALANCE)
    draws: list[Draw] = []
    left = requested
    for grant in usable:
        if left == 0:
            break
        take = min(grant.balance, left)
        if take:
            draws.append(Draw(grant.id, take))
            left -= take
    return BurnDecision(requested, tuple(draws), available)
