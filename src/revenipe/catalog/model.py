"""The validated catalog. Immutable; built only by `revenipe.catalog.loader`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from revenipe.engine.alerts import Threshold
from revenipe.engine.amounts import MAX_AMOUNT
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.grants import Rollover
from revenipe.engine.periods import Duration, Interval


class EntitlementType(StrEnum):
    METERED = "metered"
    BOOLEAN = "boolean"


class ProductType(StrEnum):
    SUBSCRIPTION = "subscription"
    ONE_TIME = "one_time"
    ADD_ON = "add_on"


class ResetKind(StrEnum):
    NEVER = "never"
    PERIOD = "period"
    """The product's recurring interval (the subscription's billing period)."""
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


@dataclass(frozen=True, slots=True)
class Entitlement:
    id: str
    name: str
    type: EntitlementType
    description: str | None = None
    alerts: tuple[Threshold, ...] = ()
    """Usage alerts (metered only; docs/concepts/webhooks-out.md)."""


@dataclass(frozen=True, slots=True)
class UsageKey:
    id: str
    name: str
    entitlement_ids: tuple[str, ...]
    """Drawn in this order."""
    costs: tuple[tuple[str, int], ...] = ()
    """Priced actions, as written: (action id, units of this key per action)."""
    alerts: tuple[Threshold, ...] = ()
    """Usage alerts (docs/concepts/webhooks-out.md)."""


@dataclass(frozen=True, slots=True)
class Cost:
    """A priced action: tracking `value` of it draws `value * unit_price` of the key."""

    id: str
    usage_key_id: str
    unit_price: int


@dataclass(frozen=True, slots=True)
class PricedTrack:
    """A track of a priced action, in the units of the usage key that pays for it."""

    action: str
    usage_key_id: str
    unit_price: int
    units: int
    """`value * unit_price`: what the track draws from the key."""


@dataclass(frozen=True, slots=True)
class ProductGrant:
    entitlement_id: str
    amount: int | None = None
    """Metered only; None for boolean entitlements."""
    reset: ResetKind = ResetKind.NEVER
    rollover: Rollover = Rollover()
    expires_after: Duration | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    type: ProductType
    grants: tuple[ProductGrant, ...] = ()
    description: str | None = None
    recurring_interval: Interval | None = None
    price: int | None = None
    currency: str | None = None
    default: bool = False
    app_store_product_id: str | None = None
    play_store_product_id: str | None = None
    stripe_price_id: str | None = None
    """The Stripe Price this product is sold at (else Checkout is given `price`)."""
    trial: Duration | None = None
    """A free start before the first paid period (recurring products only)."""

    @property
    def purchasable(self) -> bool:
        """Default products are given to everyone; every other product can be bought."""
        return not self.default


@dataclass(frozen=True)
class Catalog:
    entitlements: tuple[Entitlement, ...] = ()
    usage_keys: tuple[UsageKey, ...] = ()
    products: tuple[Product, ...] = ()

    @cached_property
    def entitlements_by_id(self) -> dict[str, Entitlement]:
        return {e.id: e for e in self.entitlements}

    @cached_property
    def usage_keys_by_id(self) -> dict[str, UsageKey]:
        return {k.id: k for k in self.usage_keys}

    @cached_property
    def costs_by_id(self) -> dict[str, Cost]:
        """Priced actions by action id (they share the entitlement and usage key namespace)."""
        return {
            action: Cost(action, key.id, price)
            for key in self.usage_keys
            for action, price in key.costs
        }

    def price(self, tracked_id: str, value: int) -> PricedTrack | None:
        """What a track of `value` of `tracked_id` draws, if `tracked_id` is a priced
        action (None for an entitlement, a usage key or an unknown id).

        The product must stay an exact amount: beyond `MAX_AMOUNT` it is `invalid_value`
        (bad input, nothing recorded), never a silent cap.
        """
        cost = self.costs_by_id.get(tracked_id)
        if cost is None:
            return None
        units = value * cost.unit_price
        if units > MAX_AMOUNT:
            raise RevenipeError(
                ErrorCode.INVALID_VALUE,
                f"{value} x {tracked_id!r} at {cost.unit_price} {cost.usage_key_id} each is "
                f"{units}, more than the largest amount ({MAX_AMOUNT})",
                field="value",
            )
        return PricedTrack(tracked_id, cost.usage_key_id, cost.unit_price, units)

    @cached_property
    def products_by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    @cached_property
    def alerts_by_target(self) -> dict[str, tuple[Threshold, ...]]:
        """The usage keys and entitlements that declare usage alerts, and their thresholds."""
        found = {e.id: e.alerts for e in self.entitlements if e.alerts}
        found.update({k.id: k.alerts for k in self.usage_keys if k.alerts})
        return found

    @property
    def default_products(self) -> tuple[Product, ...]:
        return tuple(p for p in self.products if p.default)

    def to_document(self) -> dict[str, Any]:
        """The canonical JSON-able form (what `parse_catalog` accepts back unchanged)."""
        return {
            "entitlements": [
                _drop_none(
                    {
                        "id": e.id,
                        "name": e.name,
                        "type": e.type.value,
                        "description": e.description,
                        "alerts": _alerts_document(e.alerts),
                    }
                )
                for e in self.entitlements
            ],
            "usage_keys": [_usage_key_document(k) for k in self.usage_keys],
            "products": [_product_document(p) for p in self.products],
        }


def _alerts_document(alerts: tuple[Threshold, ...]) -> list[dict[str, int]] | None:
    # Absent when empty: catalogs written before alerts keep their canonical form.
    return [a.to_document() for a in alerts] or None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _usage_key_document(key: UsageKey) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "entitlements": list(key.entitlement_ids),
    }
    if key.costs:
        document["costs"] = dict(key.costs)
    if key.alerts:
        document["alerts"] = _alerts_document(key.alerts)
    return document


def _product_document(product: Product) -> dict[str, Any]:
    grants = []
    for g in product.grants:
        grant: dict[str, Any] = {"entitlement": g.entitlement_id}
        if g.amount is not None:
            grant["amount"] = g.amount
            grant["reset"] = g.reset.value
            if g.reset is not ResetKind.NEVER:
                grant["rollover"] = {"min": g.rollover.min, "max": g.rollover.max}
            grant["priority"] = g.priority
        if g.expires_after is not None:
            grant["expires_after"] = g.expires_after.isoformat()
        grants.append(grant)
    return _drop_none(
        {
            "id": product.id,
            "name": product.name,
            "description": product.description,
            "type": product.type.value,
            "recurring_interval": product.recurring_interval.value
            if product.recurring_interval
            else None,
            "price": product.price,
            "currency": product.currency,
            "default": product.default,
            "app_store_product_id": product.app_store_product_id,
            "play_store_product_id": product.play_store_product_id,
            "stripe_price_id": product.stripe_price_id,
            "trial": product.trial.isoformat() if product.trial else None,
            "grants": grants,
        }
    )
