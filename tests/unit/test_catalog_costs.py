"""Priced actions (`costs` on a usage key): validation names each bad entry, the ids share
the namespace of entitlements and usage keys, and `Catalog.price` turns a track of an
action into units of its key (docs/concepts/catalog.md#costs)."""

from __future__ import annotations

from typing import Any

import pytest

from revenipe.catalog.loader import CatalogError, load_catalog, parse_catalog
from revenipe.catalog.model import Cost, PricedTrack
from revenipe.engine.amounts import MAX_AMOUNT
from revenipe.engine.errors import ErrorCode, RevenipeError


def document(costs: object, *, extra_keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "entitlements": [
            {"id": "monthly_credits", "name": "Monthly credits", "type": "metered"},
            {"id": "export_hd", "name": "HD export", "type": "boolean"},
        ],
        "usage_keys": [
            {
                "id": "credits",
                "name": "Credits",
                "entitlements": ["monthly_credits"],
                "costs": costs,
            },
            *(extra_keys or []),
        ],
        "products": [],
    }


def problems(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(doc)
    return [(p.path, p.message) for p in info.value.problems]


def test_costs_are_read_in_order_and_written_back() -> None:
    catalog = load_catalog(
        """
entitlements: [{id: monthly_credits, name: Monthly credits, type: metered}]
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits]
    costs: {image_generation: 5, export_4k: 20}
"""
    )
    assert catalog.usage_keys[0].costs == (("image_generation", 5), ("export_4k", 20))
    assert catalog.costs_by_id == {
        "image_generation": Cost("image_generation", "credits", 5),
        "export_4k": Cost("export_4k", "credits", 20),
    }
    round_trip = parse_catalog(catalog.to_document())
    assert round_trip == catalog
    assert catalog.to_document()["usage_keys"][0]["costs"] == {
        "image_generation": 5,
        "export_4k": 20,
    }


def test_a_key_without_costs_writes_none() -> None:
    catalog = parse_catalog(document(None))
    assert catalog.usage_keys[0].costs == ()
    assert "costs" not in catalog.to_document()["usage_keys"][0]


@pytest.mark.parametrize(
    ("price", "fragment"),
    [
        (0, "must be from 1 to"),
        (-5, "must be from 1 to"),
        (MAX_AMOUNT + 1, "must be from 1 to"),
        (2.5, "must be a whole number"),
        (5.0, "must be a whole number"),
        ("5", "must be a whole number"),
        (True, "must be a whole number"),
        (None, "must be a whole number"),
        ([5], "must be a whole number"),
    ],
)
def test_bad_prices_name_the_entry(price: object, fragment: str) -> None:
    found = problems(document({"image_generation": 5, "export_4k": price}))
    assert len(found) == 1, found
    path, message = found[0]
    assert path == "usage_keys[0].costs.export_4k"
    assert fragment in message
    assert "'export_4k'" in message


def test_bad_action_ids_and_shapes() -> None:
    (found,) = problems(document({"Image Generation": 5}))
    assert found[0] == "usage_keys[0].costs.Image Generation"
    assert "action id must be 1-64 characters" in found[1]
    (found,) = problems(document([{"image_generation": 5}]))
    assert found[0] == "usage_keys[0].costs"
    assert "must be a mapping" in found[1]
    (found,) = problems(document({5: 5}))
    assert found[0] == "usage_keys[0].costs[5]"


def test_cost_ids_share_the_namespace() -> None:
    (found,) = problems(document({"monthly_credits": 5}))
    assert found == (
        "usage_keys[0].costs.monthly_credits",
        "'monthly_credits' is already an entitlement id (entitlements[0].id); entitlement, "
        "usage key and priced action ids share one namespace",
    )
    (found,) = problems(document({"credits": 5}))
    assert found[0] == "usage_keys[0].costs.credits"
    assert "already a usage key id (usage_keys[0].id)" in found[1]
    # A later usage key named like an action, and an action priced by two keys.
    later_key = {"id": "image_generation", "name": "X", "entitlements": ["monthly_credits"]}
    (found,) = problems(document({"image_generation": 5}, extra_keys=[later_key]))
    assert found[0] == "usage_keys[1].id"
    assert "already a priced action id (usage_keys[0].costs.image_generation)" in found[1]
    other = {
        "id": "spare",
        "name": "Spare",
        "entitlements": ["monthly_credits"],
        "costs": {"image_generation": 3},
    }
    (found,) = problems(document({"image_generation": 5}, extra_keys=[other]))
    assert found[0] == "usage_keys[1].costs.image_generation"
    assert "already a priced action id" in found[1]


def test_price_turns_actions_into_units() -> None:
    catalog = parse_catalog(document({"image_generation": 5, "huge": 2**50}))
    assert catalog.price("image_generation", 2) == PricedTrack("image_generation", "credits", 5, 10)
    assert catalog.price("credits", 2) is None
    assert catalog.price("monthly_credits", 2) is None
    assert catalog.price("nothing", 2) is None
    assert catalog.price("huge", 7) == PricedTrack("huge", "credits", 2**50, 7 * 2**50)
    with pytest.raises(RevenipeError) as raised:
        catalog.price("huge", 8)
    assert raised.value.code is ErrorCode.INVALID_VALUE
    assert raised.value.field == "value"
    assert "more than the largest amount" in str(raised.value)
