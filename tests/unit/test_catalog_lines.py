"""The catalog editor's needs: each problem's line in the YAML, and YAML out that reads
back as the same catalog."""

from __future__ import annotations

import pytest

from revenipe.catalog import CatalogError, catalog_to_yaml, load_catalog

from support import DEMO_CATALOG

BROKEN = """\
entitlements:
  - id: credits_a
    name: Credits A
    type: metered
  - id: flag
    name: Flag
    type: toggle
usage_keys:
  - id: credits
    name: Credits
    entitlements: [credits_a, missing_one]
    costs:
      image.gen: -5
products:
  - id: pack
    name: Pack
    type: one_time
    grants:
      - entitlement: credits_a
        ammount: 10
  - name: No id
    type: one_time
"""


def problems_of(text: str) -> dict[str, tuple[int | None, int | None]]:
    with pytest.raises(CatalogError) as info:
        load_catalog(text)
    return {p.path: (p.line, p.column) for p in info.value.problems}


def test_each_problem_points_at_its_line_and_column() -> None:
    found = problems_of(BROKEN)
    # A wrong value: the value itself.
    assert found["entitlements[1].type"] == (7, 11)
    # An item of a flow list.
    assert found["usage_keys[0].entitlements[1]"] == (11, 31)
    # A key holding a dot (a priced action id): its value.
    assert found["usage_keys[0].costs.image.gen"] == (13, 18)
    # An unknown field: the key's value (same line as the key).
    assert found["products[0].grants[0].ammount"] == (20, 18)
    # A required field that is missing: the item that lacks it.
    assert found["products[1].id"] == (21, 5)
    assert found["products[0].grants[0].amount"] == (19, 9)


def test_invalid_yaml_gives_the_parser_s_line() -> None:
    found = problems_of("entitlements:\n  - id: a\n    name: [unclosed\n")
    ((line, column),) = found.values()
    assert line == 4 and column == 1


def test_a_repeated_key_is_still_refused_at_its_line() -> None:
    found = problems_of("entitlements:\n  - id: a\n    id: b\n")
    assert list(found.values()) == [(3, 5)]


def test_lines_do_not_change_what_is_equal_or_valid() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(BROKEN)
    paths = [str(p) for p in info.value.problems]
    assert all(p.line is not None for p in info.value.problems)
    assert "entitlements[1].type: " in paths[0]
    assert load_catalog(DEMO_CATALOG) == load_catalog(catalog_to_yaml(load_catalog(DEMO_CATALOG)))


def test_canonical_yaml_reads_back_as_the_same_catalog() -> None:
    catalog = load_catalog(DEMO_CATALOG)
    text = catalog_to_yaml(catalog)
    assert text.startswith("entitlements:\n- id: monthly_credits\n")
    assert load_catalog(text) == catalog
    # Names with markup or YAML's own characters survive the trip.
    odd = DEMO_CATALOG.replace("name: Monthly credits", "name: '</script><b>#: x'")
    assert load_catalog(catalog_to_yaml(load_catalog(odd))) == load_catalog(odd)
