"""The catalog loader: documents in, a `Catalog` or every problem (by field path) out."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from revenipe.catalog.loader import (
    CatalogError,
    CatalogProblem,
    catalog_from_file,
    load_catalog,
    parse_catalog,
)
from revenipe.catalog.model import (
    Catalog,
    Entitlement,
    EntitlementType,
    Product,
    ProductGrant,
    ProductType,
    ResetKind,
    UsageKey,
)
from revenipe.engine.amounts import MAX_AMOUNT
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.grants import Rollover
from revenipe.engine.periods import Duration, Interval, parse_duration

# A catalog file with every field, commented (the fields' rules:
# docs/concepts/catalog.md#the-file). It names `purchased_credits` without declaring it.
PRODUCT_MD_EXAMPLE = """\
entitlements:
  - id: monthly_credits          # ids: 1-64 chars of a-z, 0-9, '_', '-', '.'
    name: Monthly credits
    description: Credits that refill every month   # optional
    type: metered                # metered | boolean
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, purchased_credits]   # drawn in this order
products:
  - id: free
    name: Free
    description: Everyone starts here                    # optional
    type: subscription           # subscription | one_time | add_on
    recurring_interval: month    # subscriptions: day | week | month | year
    price: 0                     # minor units; optional
    currency: usd                # optional
    default: true                # granted to every new customer
    app_store_product_id: null   # optional store mappings
    play_store_product_id: null
    grants:
      - entitlement: monthly_credits
        amount: 100              # metered only
        reset: period            # never | period | day | week | month | year
        rollover: {max: 0}       # optional; min and max
        expires_after: P30D      # optional ISO-8601 duration from the grant's start
        priority: 0              # optional; lower is drawn first
      - entitlement: export_hd   # boolean: no amount
"""

PURCHASED_CREDITS = """\
  - id: purchased_credits
    name: Purchased credits
    type: metered
"""


def valid_document() -> dict[str, Any]:
    """A small valid catalog; tests break one field of a fresh copy."""
    return copy.deepcopy(
        {
            "entitlements": [
                {"id": "monthly_credits", "name": "Monthly credits", "type": "metered"},
                {"id": "purchased_credits", "name": "Purchased credits", "type": "metered"},
                {"id": "export_hd", "name": "HD export", "type": "boolean"},
            ],
            "usage_keys": [
                {
                    "id": "credits",
                    "name": "Credits",
                    "entitlements": ["monthly_credits", "purchased_credits"],
                }
            ],
            "products": [
                {
                    "id": "pro",
                    "name": "Pro",
                    "type": "subscription",
                    "recurring_interval": "month",
                    "grants": [
                        {"entitlement": "monthly_credits", "amount": 100, "reset": "period"},
                        {"entitlement": "export_hd"},
                    ],
                },
                {
                    "id": "pack",
                    "name": "Credit pack",
                    "type": "one_time",
                    "grants": [{"entitlement": "purchased_credits", "amount": 50}],
                },
            ],
        }
    )


_DELETE = object()

# Locations of the grants in `valid_document()`.
METERED = ("products", 0, "grants", 0)
ONE_TIME_METERED = ("products", 1, "grants", 0)
BOOLEAN = ("products", 0, "grants", 1)


def changed(*edits: tuple[tuple[str | int, ...], object]) -> dict[str, Any]:
    """`valid_document()` with each (location, value) set, or removed for `_DELETE`."""
    document = valid_document()
    for location, value in edits:
        parent: Any = document
        for step in location[:-1]:
            parent = parent[step]
        if value is _DELETE:
            del parent[location[-1]]
        else:
            parent[location[-1]] = value
    return document


def problems_of(document: object) -> list[CatalogProblem]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(document)
    assert info.value.problems, "a CatalogError must name at least one problem"
    return info.value.problems


def only_problem(document: object) -> CatalogProblem:
    problems = problems_of(document)
    assert len(problems) == 1, problems
    return problems[0]


def assert_only_problem(document: object, path: str, fragment: str) -> None:
    problem = only_problem(document)
    assert problem.path == path, problem
    assert fragment in problem.message, problem


# -- the example and valid catalogs --------------------------------------------------------


def test_product_md_example_as_written_names_its_undeclared_entitlement() -> None:
    # The example's usage key draws on `purchased_credits`, which it never declares.
    with pytest.raises(CatalogError) as info:
        load_catalog(PRODUCT_MD_EXAMPLE)
    assert info.value.problems == [
        CatalogProblem(
            "usage_keys[0].entitlements[1]",
            "no entitlement 'purchased_credits' is declared under entitlements",
        )
    ]


def test_product_md_example_parses_to_the_expected_model() -> None:
    text = PRODUCT_MD_EXAMPLE.replace("usage_keys:\n", PURCHASED_CREDITS + "usage_keys:\n")

    catalog = load_catalog(text)

    assert catalog == Catalog(
        entitlements=(
            Entitlement(
                "monthly_credits",
                "Monthly credits",
                EntitlementType.METERED,
                "Credits that refill every month",
            ),
            Entitlement("export_hd", "HD export", EntitlementType.BOOLEAN),
            Entitlement("purchased_credits", "Purchased credits", EntitlementType.METERED),
        ),
        usage_keys=(UsageKey("credits", "Credits", ("monthly_credits", "purchased_credits")),),
        products=(
            Product(
                id="free",
                name="Free",
                type=ProductType.SUBSCRIPTION,
                description="Everyone starts here",
                recurring_interval=Interval.MONTH,
                price=0,
                currency="usd",
                default=True,
                app_store_product_id=None,
                play_store_product_id=None,
                grants=(
                    ProductGrant(
                        entitlement_id="monthly_credits",
                        amount=100,
                        reset=ResetKind.PERIOD,
                        rollover=Rollover(min=0, max=0),
                        expires_after=Duration(days=30),
                        priority=0,
                    ),
                    ProductGrant("export_hd"),
                ),
            ),
        ),
    )
    assert catalog.default_products == catalog.products
    assert parse_catalog(catalog.to_document()) == catalog


@pytest.mark.parametrize("text", ["", "\n# nothing yet\n", "{}", "---\n", "products:\n"])
def test_an_empty_document_is_an_empty_catalog(text: str) -> None:
    assert load_catalog(text) == Catalog()


def test_order_is_kept_as_written() -> None:
    document = valid_document()
    document["entitlements"].reverse()
    document["products"].reverse()
    document["products"][1]["grants"].reverse()

    catalog = parse_catalog(document)

    assert [e.id for e in catalog.entitlements] == [
        "export_hd",
        "purchased_credits",
        "monthly_credits",
    ]
    assert [p.id for p in catalog.products] == ["pack", "pro"]
    assert [g.entitlement_id for g in catalog.products[1].grants] == [
        "export_hd",
        "monthly_credits",
    ]
    assert catalog.usage_keys[0].entitlement_ids == ("monthly_credits", "purchased_credits")


def test_defaults_of_optional_fields() -> None:
    catalog = parse_catalog(valid_document())

    pack = catalog.products_by_id["pack"]
    assert (pack.price, pack.currency, pack.default, pack.description) == (None, None, False, None)
    assert pack.recurring_interval is None
    assert pack.grants == (
        ProductGrant(
            "purchased_credits", amount=50, reset=ResetKind.NEVER, rollover=Rollover(), priority=0
        ),
    )
    assert catalog.products_by_id["pro"].grants[1] == ProductGrant("export_hd", amount=None)


def test_nulls_mean_absent_where_the_field_has_no_default() -> None:
    document = changed(
        (("entitlements", 0, "description"), None),
        (("products", 0, "price"), None),
        (("products", 0, "currency"), None),
        (("products", 0, "app_store_product_id"), None),
        (("products", 0, "play_store_product_id"), None),
        (("products", 1, "recurring_interval"), None),
        (("products", 1, "grants", 0, "expires_after"), None),
    )
    document["usage_keys"] = None

    catalog = parse_catalog(document)

    assert catalog.usage_keys == ()
    assert catalog.products[0].price is None
    assert catalog.entitlements[0].description is None


def test_every_field_set() -> None:
    document = changed(
        (("products", 0, "price"), MAX_AMOUNT),
        (("products", 0, "currency"), "eur"),
        (("products", 0, "default"), False),
        (("products", 0, "app_store_product_id"), "com.example.pro.monthly"),
        (("products", 0, "play_store_product_id"), "pro_monthly"),
        (("products", 0, "description"), "Line one\n\tline two"),
        (("products", 0, "grants", 0, "rollover"), {"min": 10, "max": 50}),
        (("products", 0, "grants", 0, "priority"), -1_000_000),
        (("products", 0, "grants", 0, "expires_after"), "P1Y2M3DT4H5M6S"),
        (("products", 0, "grants", 0, "amount"), MAX_AMOUNT),
        (("products", 0, "grants", 1, "expires_after"), "P2W"),
        (("products", 1, "grants", 0, "reset"), "week"),
        (("products", 1, "grants", 0, "priority"), 1_000_000),
    )

    pro, pack = parse_catalog(document).products

    assert pro.price == MAX_AMOUNT
    assert pro.app_store_product_id == "com.example.pro.monthly"
    assert pro.grants[0] == ProductGrant(
        "monthly_credits",
        amount=MAX_AMOUNT,
        reset=ResetKind.PERIOD,
        rollover=Rollover(min=10, max=50),
        expires_after=parse_duration("P1Y2M3DT4H5M6S"),
        priority=-1_000_000,
    )
    assert pro.grants[1] == ProductGrant("export_hd", expires_after=Duration(days=14))
    assert pack.grants[0].reset is ResetKind.WEEK
    assert pack.grants[0].priority == 1_000_000


def test_add_on_may_have_an_interval_and_reset_with_it() -> None:
    document = changed(
        (("products", 1, "type"), "add_on"),
        (("products", 1, "recurring_interval"), "week"),
        (("products", 1, "grants", 0, "reset"), "period"),
    )
    assert parse_catalog(document).products[1].recurring_interval is Interval.WEEK


def test_product_ids_are_a_namespace_of_their_own() -> None:
    document = changed((("products", 1, "id"), "credits"))
    assert parse_catalog(document).products[1].id == "credits"


def test_the_same_entitlement_in_two_products_and_two_usage_keys() -> None:
    document = changed((("products", 1, "grants", 0, "entitlement"), "monthly_credits"))
    document["usage_keys"].append(
        {"id": "monthly", "name": "Monthly", "entitlements": ["monthly_credits"]}
    )
    catalog = parse_catalog(document)
    assert catalog.products[1].grants[0].entitlement_id == "monthly_credits"


@pytest.mark.parametrize("entitlement_id", ["a", "a" * 64, "gpt-4.1_tokens", "0"])
def test_valid_ids(entitlement_id: str) -> None:
    document = changed((("entitlements", 2, "id"), entitlement_id))
    document["products"][0]["grants"][1]["entitlement"] = entitlement_id
    assert parse_catalog(document).entitlements[2].id == entitlement_id


# -- the error itself ----------------------------------------------------------------------


def test_every_problem_is_reported_at_once_one_per_line() -> None:
    document = changed(
        (("entitlements", 0, "type"), "meterd"),
        (("usage_keys", 0, "name"), True),
        (("products", 0, "grants", 0, "ammount"), 5),
        (("products", 1, "grants", 0, "amount"), 5.0),
        (("products", 1, "price"), -1),
    )

    with pytest.raises(CatalogError) as info:
        parse_catalog(document)

    paths = [problem.path for problem in info.value.problems]
    assert paths == [
        "entitlements[0].type",
        "usage_keys[0].name",
        "products[0].grants[0].ammount",
        "products[1].price",
        "products[1].grants[0].amount",
    ]
    lines = str(info.value).splitlines()
    assert lines == [f"{p.path}: {p.message}" for p in info.value.problems]
    assert lines[2] == "products[0].grants[0].ammount: unknown field; did you mean 'amount'?"


def test_catalog_error_is_an_input_error_with_a_stable_code() -> None:
    with pytest.raises(RevenipeError) as info:
        parse_catalog([])
    assert isinstance(info.value, CatalogError)
    assert info.value.code is ErrorCode.INVALID_CATALOG


# -- the document and YAML -----------------------------------------------------------------


@pytest.mark.parametrize("document", [[], "catalog", 3, True])
def test_the_document_must_be_a_mapping(document: object) -> None:
    assert_only_problem(document, "<document>", "must be a mapping")


def test_yaml_syntax_error_names_the_line() -> None:
    text = "entitlements:\n  - id: a\n    name: [unclosed\n"
    with pytest.raises(CatalogError) as info:
        load_catalog(text)
    (problem,) = info.value.problems
    assert problem.path == "<document>"
    assert problem.message.startswith("invalid YAML at line 4")


def test_yaml_tab_indentation_names_the_line() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog("entitlements:\n\t- id: a\n")
    assert "line 2" in str(info.value)


def test_a_key_repeated_in_one_mapping_is_an_error() -> None:
    text = "products:\n  - id: a\n    amount: 1\n    amount: 2\n"
    with pytest.raises(CatalogError) as info:
        load_catalog(text)
    assert (
        str(info.value)
        == "<document>: invalid YAML at line 4, column 5: found duplicate key 'amount'"
    )


def test_yaml_merge_keys_may_be_overridden() -> None:
    text = """\
entitlements:
  - &base {id: a, name: A, type: metered}
  - <<: *base
    id: b
"""
    assert [e.id for e in load_catalog(text).entitlements] == ["a", "b"]


def test_a_deeply_nested_document_is_a_problem_not_a_crash() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog("[" * 100_000)
    assert info.value.problems[0].path == "<document>"


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("    name: yes", "entitlements[0].name"),
        ("    name: off", "entitlements[0].name"),
        ("    id: no", "entitlements[0].id"),
        ("    description: on", "entitlements[0].description"),
        ("    name: 2024", "entitlements[0].name"),
        ("    name: 1.5", "entitlements[0].name"),
    ],
)
def test_yaml_booleans_and_numbers_are_not_strings(line: str, path: str) -> None:
    key = line.split(":")[0].strip()
    fields = {
        "id": "    id: a",
        "name": "    name: A",
        "description": "",
        "type": "    type: boolean",
    }
    fields[key] = line
    text = "entitlements:\n  -\n" + "\n".join(value for value in fields.values() if value)
    with pytest.raises(CatalogError) as info:
        load_catalog(text)
    (problem,) = info.value.problems
    assert problem.path == path
    assert "quote" in problem.message


def test_yaml_date_is_not_a_name() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog("entitlements:\n  - {id: a, name: 2024-01-31, type: boolean}\n")
    assert str(info.value) == "entitlements[0].name: must be a string, got a date"


# -- files ---------------------------------------------------------------------------------


def test_catalog_from_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(valid_document()), encoding="utf-8")
    assert catalog_from_file(path) == parse_catalog(valid_document())
    assert catalog_from_file(str(path)) == parse_catalog(valid_document())


def test_catalog_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(valid_document()).encode())
    assert catalog_from_file(path) == parse_catalog(valid_document())


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as info:
        catalog_from_file(path)
    assert info.value.problems == [CatalogProblem("<file>", f"no such file: {path}")]


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        catalog_from_file(tmp_path)
    assert str(info.value) == f"<file>: {tmp_path} is a directory, not a catalog file"


def test_file_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("entitlements: []\n# café\n".encode("latin-1"))
    with pytest.raises(CatalogError) as info:
        catalog_from_file(path)
    (problem,) = info.value.problems
    assert problem.path == "<file>"
    assert "not UTF-8" in problem.message


def test_yaml_errors_in_a_file_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("products: [\n", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        catalog_from_file(path)
    assert info.value.problems[0].path == "<document>"
    assert "line 2" in info.value.problems[0].message


# -- unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (("product",), "product"),
        (("entitlements", 0, "kind"), "entitlements[0].kind"),
        (("usage_keys", 0, "description"), "usage_keys[0].description"),
        (("products", 0, "interval"), "products[0].interval"),
        (("products", 0, "grants", 0, "ammount"), "products[0].grants[0].ammount"),
        (("products", 0, "grants", 0, "expires_at"), "products[0].grants[0].expires_at"),
        (("products", 1, "grants", 0, "entitlement_id"), "products[1].grants[0].entitlement_id"),
    ],
)
def test_unknown_fields_are_errors(location: tuple[str | int, ...], path: str) -> None:
    assert_only_problem(changed((location, "x")), path, "unknown field")


def test_unknown_rollover_field() -> None:
    document = changed((("products", 0, "grants", 0, "rollover"), {"maximum": 5}))
    assert_only_problem(document, "products[0].grants[0].rollover.maximum", "did you mean 'max'?")


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    problem = only_problem(changed((("entitlements", 0, "zzz"), 1)))
    assert problem.message == "unknown field; expected one of id, name, description, type, alerts"


def test_field_names_must_be_strings() -> None:
    document = valid_document()
    document["entitlements"][0][True] = "x"
    assert_only_problem(document, "entitlements[0][True]", "field names must be strings")


# -- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    ["", "Credits", "monthly credits", "a" * 65, "crédits", "a/b", "credits\n", 7, True, None],
)
def test_invalid_ids(bad_id: object) -> None:
    document = changed((("products", 1, "id"), bad_id))
    problem = only_problem(document)
    assert problem.path == "products[1].id"
    assert "1-64 characters of a-z, 0-9" in problem.message


def test_id_is_required() -> None:
    assert_only_problem(changed((("products", 1, "id"), _DELETE)), "products[1].id", "is required")


def test_duplicate_entitlement_ids() -> None:
    document = changed(
        (("entitlements", 1, "id"), "monthly_credits"),
        (("usage_keys", 0, "entitlements"), ["monthly_credits"]),
        ((*ONE_TIME_METERED, "entitlement"), "monthly_credits"),
    )
    assert_only_problem(
        document,
        "entitlements[1].id",
        "'monthly_credits' is already an entitlement id (entitlements[0].id)",
    )


def test_usage_key_ids_share_the_entitlement_namespace() -> None:
    document = changed((("usage_keys", 0, "id"), "export_hd"))
    problem = only_problem(document)
    assert problem.path == "usage_keys[0].id"
    assert "already an entitlement id" in problem.message
    assert "share one namespace" in problem.message


def test_duplicate_usage_key_ids() -> None:
    document = valid_document()
    document["usage_keys"].append(copy.deepcopy(document["usage_keys"][0]))
    assert_only_problem(document, "usage_keys[1].id", "already a usage key id (usage_keys[0].id)")


def test_duplicate_product_ids() -> None:
    assert_only_problem(
        changed((("products", 1, "id"), "pro")),
        "products[1].id",
        "duplicate product id 'pro' (first at products[0].id)",
    )


# -- names and descriptions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_name", "fragment"),
    [
        (_DELETE, "is required"),
        (None, "is required"),
        ("", "must not be blank"),
        ("   ", "must not be blank"),
        ("x" * 201, "at most 200 characters"),
        ("two\nlines", "control characters"),
        (True, "must be a string, got a boolean (true)"),
        (42, "must be a string, got an integer (42)"),
        (["a"], "must be a string, got a list"),
    ],
)
def test_invalid_names(bad_name: object, fragment: str) -> None:
    assert_only_problem(changed((("products", 0, "name"), bad_name)), "products[0].name", fragment)


def test_name_of_200_characters() -> None:
    assert parse_catalog(changed((("usage_keys", 0, "name"), "é" * 200))).usage_keys[0].name


@pytest.mark.parametrize(
    ("bad_description", "fragment"),
    [
        ("x" * 2001, "at most 2000 characters"),
        (False, "must be a string"),
        (3, "must be a string"),
        ("bell\x07", "control characters"),
    ],
)
def test_invalid_descriptions(bad_description: object, fragment: str) -> None:
    assert_only_problem(
        changed((("entitlements", 2, "description"), bad_description)),
        "entitlements[2].description",
        fragment,
    )


def test_description_of_2000_characters_and_an_empty_one() -> None:
    document = changed(
        (("entitlements", 0, "description"), "x" * 2000),
        (("products", 0, "description"), ""),
    )
    catalog = parse_catalog(document)
    assert catalog.products[0].description == ""


# -- entitlements and usage keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_type", "fragment"),
    [
        (_DELETE, "is required: one of metered, boolean"),
        (None, "is required: one of metered, boolean"),
        ("meterd", "must be one of metered, boolean, got the string 'meterd'"),
        ("Metered", "must be one of metered, boolean"),
        (True, "must be one of metered, boolean, got a boolean (true)"),
    ],
)
def test_invalid_entitlement_types(bad_type: object, fragment: str) -> None:
    problems = problems_of(changed((("entitlements", 0, "type"), bad_type)))
    # Nothing else cascades from not knowing the type of monthly_credits.
    assert len(problems) == 1, problems
    assert problems[0].path == "entitlements[0].type"
    assert fragment in problems[0].message


@pytest.mark.parametrize(
    ("entitlements", "path", "fragment"),
    [
        (_DELETE, "usage_keys[0].entitlements", "is required"),
        (None, "usage_keys[0].entitlements", "is required"),
        ([], "usage_keys[0].entitlements", "at least one metered entitlement"),
        ("monthly_credits", "usage_keys[0].entitlements", "must be a list"),
        (["monthly_credits", "bonus"], "usage_keys[0].entitlements[1]", "no entitlement 'bonus'"),
        (["export_hd"], "usage_keys[0].entitlements[0]", "'export_hd' is a boolean entitlement"),
        (
            ["monthly_credits", "monthly_credits"],
            "usage_keys[0].entitlements[1]",
            "listed twice (also at index 0)",
        ),
        (["monthly_credits", 5], "usage_keys[0].entitlements[1]", "must be an entitlement id"),
        (["credits"], "usage_keys[0].entitlements[0]", "no entitlement 'credits'"),
    ],
)
def test_invalid_usage_key_entitlements(entitlements: object, path: str, fragment: str) -> None:
    assert_only_problem(changed((("usage_keys", 0, "entitlements"), entitlements)), path, fragment)


@pytest.mark.parametrize("section", ["entitlements", "usage_keys", "products"])
def test_sections_must_be_lists(section: str) -> None:
    document = {section: {"id": "a"}}
    assert_only_problem(document, section, "must be a list, got a mapping")


@pytest.mark.parametrize("section", ["entitlements", "usage_keys", "products"])
def test_items_must_be_mappings(section: str) -> None:
    document = {section: ["monthly_credits"]}
    assert_only_problem(document, f"{section}[0]", "(a mapping of fields), got the string")


# -- products ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "value", "path", "fragment"),
    [
        (("products", 0, "type"), _DELETE, "products[0].type", "is required"),
        (("products", 0, "type"), "plan", "products[0].type", "one_time, add_on"),
        (
            ("products", 0, "recurring_interval"),
            _DELETE,
            "products[0].recurring_interval",
            "is required for subscription products",
        ),
        (
            ("products", 0, "recurring_interval"),
            "monthly",
            "products[0].recurring_interval",
            "must be one of day, week, month, year",
        ),
        (
            ("products", 1, "recurring_interval"),
            "month",
            "products[1].recurring_interval",
            "one_time products do not recur",
        ),
        (("products", 0, "price"), -1, "products[0].price", "from 0 to"),
        (("products", 0, "price"), MAX_AMOUNT + 1, "products[0].price", "from 0 to"),
        (("products", 0, "price"), 9.99, "products[0].price", "whole number"),
        (("products", 0, "price"), 5.0, "products[0].price", "whole number"),
        (("products", 0, "price"), True, "products[0].price", "got a boolean"),
        (("products", 0, "price"), "500", "products[0].price", "got the string '500'"),
        (("products", 0, "currency"), "USD", "products[0].currency", "lowercase ISO 4217"),
        (("products", 0, "currency"), "us", "products[0].currency", "lowercase ISO 4217"),
        (("products", 0, "currency"), "usd ", "products[0].currency", "lowercase ISO 4217"),
        (("products", 0, "currency"), 840, "products[0].currency", "got an integer"),
        (("products", 0, "default"), "yes", "products[0].default", "true or false"),
        (("products", 0, "default"), 1, "products[0].default", "true or false"),
        (("products", 0, "default"), None, "products[0].default", "got null"),
        (
            ("products", 0, "app_store_product_id"),
            123,
            "products[0].app_store_product_id",
            "must be a store product id",
        ),
        (
            ("products", 0, "play_store_product_id"),
            False,
            "products[0].play_store_product_id",
            "must be a store product id",
        ),
        (
            ("products", 0, "play_store_product_id"),
            "",
            "products[0].play_store_product_id",
            "non-blank",
        ),
        (
            ("products", 0, "app_store_product_id"),
            "x" * 201,
            "products[0].app_store_product_id",
            "at most 200 characters",
        ),
        (("products", 0, "grants"), {"entitlement": "export_hd"}, "products[0].grants", "list"),
        (("products", 0, "grants", 1), "export_hd", "products[0].grants[1]", "a grant"),
    ],
)
def test_invalid_product_fields(
    location: tuple[str | int, ...], value: object, path: str, fragment: str
) -> None:
    assert_only_problem(changed((location, value)), path, fragment)


def test_store_product_ids_are_unique_per_store() -> None:
    document = changed(
        (("products", 0, "app_store_product_id"), "com.example.credits"),
        (("products", 1, "app_store_product_id"), "com.example.credits"),
    )
    assert_only_problem(
        document,
        "products[1].app_store_product_id",
        "'com.example.credits' is already the app_store_product_id of products[0]",
    )


def test_the_same_store_product_id_in_two_stores_is_fine() -> None:
    document = changed(
        (("products", 0, "app_store_product_id"), "credits"),
        (("products", 0, "play_store_product_id"), "credits"),
    )
    assert parse_catalog(document).products[0].play_store_product_id == "credits"


def test_a_product_without_grants() -> None:
    document = changed((("products", 1, "grants"), _DELETE))
    assert parse_catalog(document).products[1].grants == ()


# -- grants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "value", "path", "fragment"),
    [
        (
            (*METERED, "entitlement"),
            _DELETE,
            "products[0].grants[0].entitlement",
            "is required",
        ),
        (
            (*METERED, "entitlement"),
            "bonus",
            "products[0].grants[0].entitlement",
            "no entitlement 'bonus'",
        ),
        (
            (*METERED, "entitlement"),
            "credits",
            "products[0].grants[0].entitlement",
            "'credits' is a usage key",
        ),
        ((*METERED, "entitlement"), 5, "products[0].grants[0].entitlement", "entitlement id"),
        ((*METERED, "amount"), _DELETE, "products[0].grants[0].amount", "is required"),
        ((*METERED, "amount"), None, "products[0].grants[0].amount", "is required"),
        ((*METERED, "amount"), 0, "products[0].grants[0].amount", "from 1 to"),
        ((*METERED, "amount"), -5, "products[0].grants[0].amount", "from 1 to"),
        ((*METERED, "amount"), MAX_AMOUNT + 1, "products[0].grants[0].amount", "from 1 to"),
        ((*METERED, "amount"), True, "products[0].grants[0].amount", "got a boolean (true)"),
        ((*METERED, "amount"), 5.0, "products[0].grants[0].amount", "decimal point (5.0)"),
        ((*METERED, "amount"), 2.5, "products[0].grants[0].amount", "whole number"),
        ((*METERED, "amount"), "5", "products[0].grants[0].amount", "got the string '5'"),
        ((*METERED, "reset"), "monthly", "products[0].grants[0].reset", "never, period, day"),
        ((*METERED, "reset"), None, "products[0].grants[0].reset", "got null"),
        (
            (*ONE_TIME_METERED, "reset"),
            "period",
            "products[1].grants[0].reset",
            "this product has none",
        ),
        (
            (*ONE_TIME_METERED, "rollover"),
            {"max": 10},
            "products[1].grants[0].rollover",
            "this grant never resets",
        ),
        (
            (*METERED, "rollover"),
            {"min": 5, "max": 3},
            "products[0].grants[0].rollover",
            "min (5) must not be greater than max (3)",
        ),
        (
            (*METERED, "rollover"),
            {"min": 5},
            "products[0].grants[0].rollover",
            "min (5) must not be greater than max (0)",
        ),
        (
            (*METERED, "rollover"),
            {"max": -1},
            "products[0].grants[0].rollover.max",
            "from 0 to",
        ),
        (
            (*METERED, "rollover"),
            {"max": True},
            "products[0].grants[0].rollover.max",
            "got a boolean",
        ),
        (
            (*METERED, "rollover"),
            {"min": 1.0, "max": 2},
            "products[0].grants[0].rollover.min",
            "whole number",
        ),
        ((*METERED, "rollover"), 10, "products[0].grants[0].rollover", "a mapping"),
        ((*METERED, "rollover"), None, "products[0].grants[0].rollover", "got null"),
        (
            (*METERED, "expires_after"),
            "30 days",
            "products[0].grants[0].expires_after",
            "ISO-8601",
        ),
        (
            (*METERED, "expires_after"),
            "P0D",
            "products[0].grants[0].expires_after",
            "longer than zero",
        ),
        ((*METERED, "expires_after"), 30, "products[0].grants[0].expires_after", "ISO-8601"),
        (
            (*METERED, "priority"),
            1_000_001,
            "products[0].grants[0].priority",
            "from -1000000 to 1000000",
        ),
        (
            (*METERED, "priority"),
            -1_000_001,
            "products[0].grants[0].priority",
            "from -1000000 to 1000000",
        ),
        ((*METERED, "priority"), False, "products[0].grants[0].priority", "got a boolean"),
        ((*METERED, "priority"), 1.0, "products[0].grants[0].priority", "whole number"),
        ((*METERED, "priority"), None, "products[0].grants[0].priority", "got null"),
        (
            (*BOOLEAN, "amount"),
            1,
            "products[0].grants[1].amount",
            "boolean entitlements have no amount",
        ),
        (
            (*BOOLEAN, "reset"),
            "never",
            "products[0].grants[1].reset",
            "boolean entitlements have no reset",
        ),
        (
            (*BOOLEAN, "rollover"),
            {},
            "products[0].grants[1].rollover",
            "boolean entitlements have no rollover",
        ),
        (
            (*BOOLEAN, "priority"),
            0,
            "products[0].grants[1].priority",
            "boolean entitlements have no priority",
        ),
        ((*BOOLEAN, "expires_after"), "P", "products[0].grants[1].expires_after", "ISO-8601"),
    ],
)
def test_invalid_grant_fields(
    location: tuple[str | int, ...], value: object, path: str, fragment: str
) -> None:
    assert_only_problem(changed((location, value)), path, fragment)


def test_rollover_with_reset_explicitly_never() -> None:
    document = changed(
        ((*METERED, "reset"), "never"),
        ((*METERED, "rollover"), {"max": 0}),
    )
    assert_only_problem(document, "products[0].grants[0].rollover", "never resets")


def test_a_product_grants_each_entitlement_once() -> None:
    document = valid_document()
    document["products"][0]["grants"].append({"entitlement": "monthly_credits", "amount": 5})
    assert_only_problem(
        document,
        "products[0].grants[2].entitlement",
        "this product already grants 'monthly_credits' (products[0].grants[0])",
    )


def test_a_grant_of_an_unknown_entitlement_still_has_its_fields_checked() -> None:
    document = changed(
        ((*METERED, "entitlement"), "bonus"),
        ((*METERED, "amount"), 0),
        ((*METERED, "colour"), "red"),
    )
    assert [p.path for p in problems_of(document)] == [
        "products[0].grants[0].entitlement",
        "products[0].grants[0].colour",
        "products[0].grants[0].amount",
    ]


def test_an_invalid_interval_does_not_also_blame_period_resets() -> None:
    document = changed((("products", 0, "recurring_interval"), "fortnight"))
    assert_only_problem(document, "products[0].recurring_interval", "must be one of")


def test_metered_amount_up_to_the_maximum() -> None:
    document = changed(
        ((*METERED, "amount"), MAX_AMOUNT), ((*METERED, "rollover"), {"min": 0, "max": MAX_AMOUNT})
    )
    grant = parse_catalog(document).products[0].grants[0]
    assert grant.amount == MAX_AMOUNT
    assert grant.rollover == Rollover(min=0, max=MAX_AMOUNT)


# -- round trip ----------------------------------------------------------------------------

_ids = st.from_regex(r"[a-z0-9_.\-]{1,64}", fullmatch=True)
_names = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40).filter(
    str.strip
)
# C1 controls such as NEL are left out: PyYAML's emitter turns a lone one into a space.
_descriptions = st.none() | st.text(
    st.characters(exclude_categories=["Cc", "Cs"], include_characters="\t\n"), max_size=60
)
_durations = st.builds(
    Duration,
    months=st.integers(0, 1200),
    days=st.integers(0, 36500),
    seconds=st.integers(0, 10**7),
).filter(lambda d: not d.is_zero)
_amounts = st.integers(1, MAX_AMOUNT)


@st.composite
def _grants(draw: st.DrawFn, entitlement: Entitlement, has_interval: bool) -> ProductGrant:
    expires_after = draw(st.none() | _durations)
    if entitlement.type is EntitlementType.BOOLEAN:
        return ProductGrant(entitlement.id, expires_after=expires_after)
    resets = [kind for kind in ResetKind if has_interval or kind is not ResetKind.PERIOD]
    reset = draw(st.sampled_from(resets))
    rollover = Rollover()
    if reset is not ResetKind.NEVER:
        low, high = sorted(draw(st.lists(st.integers(0, MAX_AMOUNT), min_size=2, max_size=2)))
        rollover = Rollover(min=low, max=high)
    return ProductGrant(
        entitlement.id,
        amount=draw(_amounts),
        reset=reset,
        rollover=rollover,
        expires_after=expires_after,
        priority=draw(st.integers(-1_000_000, 1_000_000)),
    )


@st.composite
def _catalogs(draw: st.DrawFn) -> Catalog:
    shared_ids = draw(st.lists(_ids, unique=True, max_size=8))
    split = draw(st.integers(0, len(shared_ids)))
    entitlements = tuple(
        Entitlement(
            entitlement_id,
            draw(_names),
            draw(st.sampled_from(EntitlementType)),
            draw(_descriptions),
        )
        for entitlement_id in shared_ids[:split]
    )
    metered = [e.id for e in entitlements if e.type is EntitlementType.METERED]
    usage_keys = tuple(
        UsageKey(
            key_id,
            draw(_names),
            tuple(draw(st.lists(st.sampled_from(metered), min_size=1, unique=True))),
        )
        for key_id in (shared_ids[split:] if metered else [])
    )
    product_ids = draw(st.lists(_ids, unique=True, max_size=4))
    store_ids = {
        store: draw(
            st.lists(
                st.text(min_size=1, max_size=5).filter(str.isalnum),
                unique=True,
                min_size=len(product_ids),
                max_size=len(product_ids),
            )
        )
        for store in ("app", "play")
    }
    products = []
    for index, product_id in enumerate(product_ids):
        product_type = draw(st.sampled_from(ProductType))
        interval = None
        if product_type is ProductType.SUBSCRIPTION:
            interval = draw(st.sampled_from(Interval))
        elif product_type is ProductType.ADD_ON:
            interval = draw(st.none() | st.sampled_from(Interval))
        granted = (
            draw(st.lists(st.sampled_from(entitlements), unique_by=lambda e: e.id))
            if entitlements
            else []
        )
        products.append(
            Product(
                id=product_id,
                name=draw(_names),
                type=product_type,
                grants=tuple(draw(_grants(e, interval is not None)) for e in granted),
                description=draw(_descriptions),
                recurring_interval=interval,
                price=draw(st.none() | st.integers(0, MAX_AMOUNT)),
                currency=draw(st.none() | st.from_regex(r"[a-z]{3}", fullmatch=True)),
                default=draw(st.booleans()),
                app_store_product_id=draw(st.none() | st.just(store_ids["app"][index])),
                play_store_product_id=draw(st.none() | st.just(store_ids["play"][index])),
            )
        )
    return Catalog(entitlements, usage_keys, tuple(products))


@settings(max_examples=150, deadline=None)
@given(_catalogs())
def test_round_trip_through_the_canonical_document(catalog: Catalog) -> None:
    document = catalog.to_document()
    assert parse_catalog(document) == catalog
    assert parse_catalog(json.loads(json.dumps(document))) == catalog


@settings(max_examples=50, deadline=None)
@given(_catalogs())
def test_round_trip_through_yaml(catalog: Catalog) -> None:
    assert load_catalog(yaml.safe_dump(catalog.to_document(), allow_unicode=True)) == catalog


def test_round_trip_of_the_longest_durations() -> None:
    document = changed(((*METERED, "expires_after"), "P999Y11M366000DT8784000H"))
    catalog = parse_catalog(document)
    assert parse_catalog(catalog.to_document()) == catalog


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["id", "name", "type", "entitlement", "amount", "reset", "rollover", "grants", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "entitlements": _json_values,
            "usage_keys": _json_values,
            "products": _json_values,
        },
    )
)
def test_any_document_gives_a_catalog_or_named_problems(document: dict[str, Any]) -> None:
    try:
        catalog = parse_catalog(document)
    except CatalogError as error:
        assert error.problems
        assert all(problem.path and problem.message for problem in error.problems)
    else:
        assert isinstance(catalog, Catalog)
