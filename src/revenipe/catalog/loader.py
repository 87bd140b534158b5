"""Catalog documents in, a validated `Catalog` out, or every problem at once.

A catalog arrives as YAML text (`load_catalog`, `catalog_from_file`) or as the plain
structure YAML or JSON decode to (`parse_catalog`). Validation is strict because a
catalog decides what customers are granted: unknown fields are errors (a typo such as
`ammount` must not silently grant nothing), and a value of the wrong type is never
coerced (YAML reads `yes`/`no`/`on`/`off` as booleans and `5.0` as a float; neither is
accepted where a string or an integer is expected). Every problem names the field by its
path, such as ``products[0].grants[1].amount``, and says why it is wrong; all problems
are reported together so that one run of `revenipe catalog validate` shows them all.

Optional fields whose absent value is "nothing" (descriptions, prices, store ids,
expiry, the recurring interval) also accept ``null``; so do the lists (``products:``
with every entry commented out is an empty list). Fields with a real default
(`default`, `reset`, `rollover`, `priority`) must be left out rather than set to null.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from revenipe.catalog.fields import (
    CONTROL_CHARACTERS,
    MAX_PRIORITY,
    MAX_STORE_PRODUCT_ID_LENGTH,
    MISSING,
    CatalogProblem,
    FieldChecker,
    describe,
    join_path,
    yaml_hint,
)
from revenipe.catalog.lines import DOCUMENT_PATH, FILE_PATH, locate_problems
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
from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.engine.grants import Rollover
from revenipe.engine.periods import Interval

_TOP_LEVEL_FIELDS = ("entitlements", "usage_keys", "products")
_ENTITLEMENT_FIELDS = ("id", "name", "description", "type", "alerts")
_USAGE_KEY_FIELDS = ("id", "name", "entitlements", "costs", "alerts")
_PRODUCT_FIELDS = (
    "id",
    "name",
    "description",
    "type",
    "recurring_interval",
    "price",
    "currency",
    "default",
    "app_store_product_id",
    "play_store_product_id",
    "stripe_price_id",
    "trial",
    "grants",
)
_METERED_GRANT_FIELDS = ("entitlement", "amount", "reset", "rollover", "expires_after", "priority")
_BOOLEAN_GRANT_FIELDS = ("entitlement", "expires_after")
_ROLLOVER_FIELDS = ("min", "max")
_STORE_FIELDS = ("app_store_product_id", "play_store_product_id", "stripe_price_id")


class CatalogError(RevenipeError):
    """A catalog that cannot be applied, with every problem found in it.

    ``str(error)`` lists the problems one per line as ``path: message``.
    """

    def __init__(self, problems: Iterable[CatalogProblem]) -> None:
        self.problems: list[CatalogProblem] = list(problems)
        super().__init__(ErrorCode.INVALID_CATALOG, "\n".join(map(str, self.problems)))


def load_catalog(text: str) -> Catalog:
    """Parse and validate a catalog written in YAML.

    An empty document (or ``{}``) is a valid, empty catalog. A key repeated within one
    mapping is an error rather than "the last one wins". Raises `CatalogError`.
    """
    try:
        document = yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError as exc:
        mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
        problem = CatalogProblem(DOCUMENT_PATH, _describe_yaml_error(exc))
        if mark is not None:
            problem = replace(problem, line=mark.line + 1, column=mark.column + 1)
        raise CatalogError([problem]) from None
    except RecursionError:
        raise CatalogError(
            [CatalogProblem(DOCUMENT_PATH, "the document is nested too deeply to be a catalog")]
        ) from None
    try:
        return parse_catalog(document)
    except CatalogError as error:
        raise CatalogError(locate_problems(text, error.problems, _StrictSafeLoader)) from None


def catalog_from_file(path: str | os.PathLike[str]) -> Catalog:
    """Read a UTF-8 YAML catalog file, then validate it like `load_catalog`.

    Raises `CatalogError`, with the path ``<file>`` when the file cannot be read.
    """
    try:
        # utf-8-sig: editors on Windows like to start UTF-8 files with a byte-order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        message = f"no such file: {os.fspath(path)}"
    except IsADirectoryError:
        message = f"{os.fspath(path)} is a directory, not a catalog file"
    except PermissionError:
        message = f"permission denied reading {os.fspath(path)}"
    except UnicodeDecodeError as exc:
        message = f"{os.fspath(path)} is not UTF-8 text (invalid byte at offset {exc.start})"
    except OSError as exc:
        message = f"cannot read {os.fspath(path)}: {exc.strerror or exc}"
    else:
        return load_catalog(text)
    raise CatalogError([CatalogProblem(FILE_PATH, message)])


def parse_catalog(document: object) -> Catalog:
    """Validate a decoded catalog document (from YAML or JSON) and build the `Catalog`.

    ``None`` (an empty YAML document) is an empty catalog. Order is kept as written.
    Raises `CatalogError` listing every problem found.
    """
    if document is None:
        return Catalog()
    checker = _Checker()
    catalog = checker.catalog(document)
    if checker.problems or catalog is None:
        raise CatalogError(checker.problems)
    return catalog


class _Checker(FieldChecker):
    """Walks one document, collecting problems instead of stopping at the first.

    Each method returns the validated value, or None when it found a problem (in which
    case `problems` is not empty and the catalog is never built).
    """

    def __init__(self) -> None:
        super().__init__()
        self.entitlement_types: dict[str, EntitlementType | None] = {}
        """Declared entitlement ids; None when the type itself is invalid."""
        self.id_paths: dict[str, str] = {}
        """Entitlement and usage key ids (one namespace) -> where first declared."""
        self.usage_key_ids: set[str] = set()
        self.product_paths: dict[str, str] = {}
        self.store_product_paths: dict[str, dict[str, str]] = {key: {} for key in _STORE_FIELDS}

    # -- the document -----------------------------------------------------------------

    def catalog(self, document: object) -> Catalog | None:
        if not isinstance(document, Mapping):
            self.report(
                DOCUMENT_PATH,
                "a catalog must be a mapping with entitlements, usage_keys and products, "
                f"got {describe(document)}",
            )
            return None
        self.check_fields(document, "", _TOP_LEVEL_FIELDS)
        entitlements = [
            self.entitlement(item, f"entitlements[{index}]")
            for index, item in enumerate(self.items(document, "entitlements", ""))
        ]
        usage_keys = [
            self.usage_key(item, f"usage_keys[{index}]")
            for index, item in enumerate(self.items(document, "usage_keys", ""))
        ]
        products = [
            self.product(item, f"products[{index}]")
            for index, item in enumerate(self.items(document, "products", ""))
        ]
        if self.problems:
            return None
        return Catalog(
            entitlements=tuple(_built(entitlements)),
            usage_keys=tuple(_built(usage_keys)),
            products=tuple(_built(products)),
        )

    def entitlement(self, value: object, path: str) -> Entitlement | None:
        fields = self.mapping(value, path, "an entitlement")
        if fields is None:
            return None
        self.check_fields(fields, path, _ENTITLEMENT_FIELDS)
        entitlement_id = self.catalog_id(fields, path)
        name = self.name(fields, path)
        description = self.description(fields, path)
        entitlement_type = self.choice(fields, "type", path, EntitlementType)
        if entitlement_id is not None and self.claim_id(entitlement_id, f"{path}.id"):
            self.entitlement_types[entitlement_id] = entitlement_type
        alerts = self.alerts(fields, path)
        if alerts and entitlement_type is EntitlementType.BOOLEAN:
            self.report(f"{path}.alerts", "alerts are for metered entitlements only")
            return None
        if entitlement_id is None or name is None or entitlement_type is None or alerts is None:
            return None
        return Entitlement(entitlement_id, name, entitlement_type, description, alerts)

    def usage_key(self, value: object, path: str) -> UsageKey | None:
        fields = self.mapping(value, path, "a usage key")
        if fields is None:
            return None
        self.check_fields(fields, path, _USAGE_KEY_FIELDS)
        key_id = self.catalog_id(fields, path)
        name = self.name(fields, path)
        if key_id is not None and self.claim_id(key_id, f"{path}.id"):
            self.usage_key_ids.add(key_id)
        entitlement_ids = self.usage_key_entitlements(fields, f"{path}.entitlements")
        costs = self.costs(fields, f"{path}.costs", claim=self.claim_id)
        alerts = self.alerts(fields, path)
        if (
            key_id is None
            or name is None
            or entitlement_ids is None
            or costs is None
            or alerts is None
        ):
            return None
        return UsageKey(key_id, name, entitlement_ids, costs, alerts)

    def usage_key_entitlements(
        self, fields: Mapping[Any, Any], path: str
    ) -> tuple[str, ...] | None:
        value = fields.get("entitlements", MISSING)
        if value is MISSING or value is None:
            self.report(path, "is required: the metered entitlements this usage key draws on")
            return None
        if not isinstance(value, list | tuple):
            self.report(path, f"must be a list of entitlement ids, got {describe(value)}")
            return None
        if not value:
            self.report(path, "must list at least one metered entitlement")
            return None
        ids: list[str] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, str):
                self.report(where, f"must be an entitlement id, got {describe(item)}")
                continue
            if item in seen:
                self.report(where, f"{item!r} is listed twice (also at index {seen[item]})")
                continue
            seen[item] = index
            if item not in self.entitlement_types:
                self.report(where, f"no entitlement {item!r} is declared under entitlements")
                continue
            if self.entitlement_types[item] is EntitlementType.BOOLEAN:
                self.report(
                    where,
                    f"{item!r} is a boolean entitlement; usage keys draw on metered "
                    "entitlements only",
                )
                continue
            ids.append(item)
        if len(ids) != len(value):
            return None
        return tuple(ids)

    def product(self, value: object, path: str) -> Product | None:
        fields = self.mapping(value, path, "a product")
        if fields is None:
            return None
        self.check_fields(fields, path, _PRODUCT_FIELDS)
        product_id = self.catalog_id(fields, path)
        if product_id is not None:
            self.claim_product_id(product_id, f"{path}.id")
        name = self.name(fields, path)
        description = self.description(fields, path)
        product_type = self.choice(fields, "type", path, ProductType)
        interval = self.recurring_interval(fields, path, product_type)
        price = self.integer(fields, "price", path, 0, MAX_AMOUNT, default=None)
        currency = self.currency(fields, path)
        default = self.boolean(fields, "default", path)
        store_ids = {key: self.store_product_id(fields, key, path) for key in _STORE_FIELDS}
        # Whether grants may reset with the period. A bad interval value, or a subscription
        # or a type without one, was reported already; do not blame the grants too.
        has_interval = fields.get("recurring_interval") is not None or product_type in (
            ProductType.SUBSCRIPTION,
            None,
        )
        grants = self.product_grants(fields, path, has_interval=has_interval)
        trial = self.duration(fields, "trial", path)
        if trial is not None and fields.get("recurring_interval") is None:
            self.report(
                f"{path}.trial",
                "a trial is the free start of a recurring product; this product does not recur",
            )
        if product_id is None or name is None or product_type is None or grants is None:
            return None
        return Product(
            id=product_id,
            name=name,
            type=product_type,
            grants=grants,
            description=description,
            recurring_interval=interval,
            price=price,
            currency=currency,
            default=bool(default),
            app_store_product_id=store_ids["app_store_product_id"],
            play_store_product_id=store_ids["play_store_product_id"],
            stripe_price_id=store_ids["stripe_price_id"],
            trial=trial,
        )

    def recurring_interval(
        self, fields: Mapping[Any, Any], path: str, product_type: ProductType | None
    ) -> Interval | None:
        where = f"{path}.recurring_interval"
        present = fields.get("recurring_interval") is not None
        interval = self.choice(fields, "recurring_interval", path, Interval, default=None)
        if product_type is ProductType.SUBSCRIPTION and not present:
            self.report(where, "is required for subscription products (day, week, month, year)")
        elif product_type is ProductType.ONE_TIME and present:
            self.report(
                where,
                "one_time products do not recur; remove it, or make the product a "
                "subscription or add_on",
            )
        return interval

    def product_grants(
        self, fields: Mapping[Any, Any], path: str, *, has_interval: bool
    ) -> tuple[ProductGrant, ...] | None:
        granted: dict[str, str] = {}
        grants: list[ProductGrant | None] = []
        for index, item in enumerate(self.items(fields, "grants", path)):
            where = f"{path}.grants[{index}]"
            grants.append(self.grant(item, where, has_interval=has_interval))
            entitlement_id = _grant_entitlement(item)
            if entitlement_id is None:
                continue
            if entitlement_id in granted:
                self.report(
                    f"{where}.entitlement",
                    f"this product already grants {entitlement_id!r} ({granted[entitlement_id]}); "
                    "a product grants each entitlement at most once",
                )
            else:
                granted[entitlement_id] = where
        if None in grants:
            return None
        return tuple(_built(grants))

    def grant(self, value: object, path: str, *, has_interval: bool) -> ProductGrant | None:
        fields = self.mapping(value, path, "a grant")
        if fields is None:
            return None
        entitlement_id, entitlement_type = self.grant_entitlement(fields, path)
        if entitlement_type is EntitlementType.BOOLEAN:
            self.check_fields(
                fields,
                path,
                _BOOLEAN_GRANT_FIELDS,
                forbidden={
                    key: f"boolean entitlements have no {key}: they give access, nothing is counted"
                    for key in _METERED_GRANT_FIELDS
                    if key not in _BOOLEAN_GRANT_FIELDS
                },
            )
            expires_after = self.duration(fields, "expires_after", path)
            if entitlement_id is None:
                return None
            return ProductGrant(entitlement_id, expires_after=expires_after)
        # Metered, or unknown because the entitlement is missing or invalid: check every
        # field that is there, so one run reports as much as possible.
        self.check_fields(fields, path, _METERED_GRANT_FIELDS)
        metered = entitlement_type is EntitlementType.METERED
        amount = self.integer(fields, "amount", path, 1, MAX_AMOUNT, default=None)
        if metered and fields.get("amount") is None:
            self.report(
                f"{path}.amount",
                f"is required for metered entitlements: a whole number from 1 to {MAX_AMOUNT}",
            )
        reset = self.choice(fields, "reset", path, ResetKind, default=ResetKind.NEVER)
        if reset is ResetKind.PERIOD and not has_interval:
            self.report(
                f"{path}.reset",
                "'period' resets with the product's recurring_interval, and this product "
                "has none; use day, week, month or year",
            )
        rollover = self.rollover(fields, path, reset)
        expires_after = self.duration(fields, "expires_after", path)
        priority = self.integer(fields, "priority", path, -MAX_PRIORITY, MAX_PRIORITY, default=0)
        if entitlement_id is None or amount is None or reset is None:
            return None
        if rollover is None or priority is None:
            return None
        return ProductGrant(
            entitlement_id=entitlement_id,
            amount=amount,
            reset=reset,
            rollover=rollover,
            expires_after=expires_after,
            priority=priority,
        )

    def grant_entitlement(
        self, fields: Mapping[Any, Any], path: str
    ) -> tuple[str | None, EntitlementType | None]:
        """The granted entitlement's id and type; (id, None) when its type is unknown."""
        where = f"{path}.entitlement"
        value = fields.get("entitlement", MISSING)
        if value is MISSING or value is None:
            self.report(where, "is required: the id of the entitlement this grant gives")
            return None, None
        if not isinstance(value, str):
            self.report(where, f"must be an entitlement id, got {describe(value)}")
            return None, None
        if value in self.usage_key_ids:
            self.report(
                where,
                f"{value!r} is a usage key; grant the entitlements it draws on instead",
            )
            return None, None
        if value not in self.entitlement_types:
            self.report(where, f"no entitlement {value!r} is declared under entitlements")
            return None, None
        return value, self.entitlement_types[value]

    def rollover(
        self, fields: Mapping[Any, Any], path: str, reset: ResetKind | None
    ) -> Rollover | None:
        where = f"{path}.rollover"
        value = fields.get("rollover", MISSING)
        if value is MISSING:
            return Rollover()
        if reset is ResetKind.NEVER:
            self.report(
                where,
                "rollover happens at a reset, and this grant never resets; set reset or "
                "remove rollover",
            )
        rollover = self.mapping(value, where, "a rollover (min and max)")
        if rollover is None:
            return None
        self.check_fields(rollover, where, _ROLLOVER_FIELDS)
        low = self.integer(rollover, "min", where, 0, MAX_AMOUNT, default=0)
        high = self.integer(rollover, "max", where, 0, MAX_AMOUNT, default=0)
        if low is None or high is None:
            return None
        if low > high:
            self.report(where, f"min ({low}) must not be greater than max ({high})")
            return None
        return Rollover(min=low, max=high)

    # -- uniqueness -------------------------------------------------------------------

    def claim_id(self, value: str, path: str) -> bool:
        """Record an entitlement or usage key id; False (and a problem) if already taken."""
        if value in self.id_paths:
            first = self.id_paths[value]
            if first.startswith("entitlements"):
                kind = "an entitlement"
            elif ".costs" in first:
                kind = "a priced action"
            else:
                kind = "a usage key"
            self.report(
                path,
                f"{value!r} is already {kind} id ({first}); entitlement, usage key and "
                "priced action ids share one namespace",
            )
            return False
        self.id_paths[value] = path
        return True

    def claim_product_id(self, value: str, path: str) -> None:
        if value in self.product_paths:
            self.report(
                path, f"duplicate product id {value!r} (first at {self.product_paths[value]})"
            )
        else:
            self.product_paths[value] = path

    def store_product_id(self, fields: Mapping[Any, Any], key: str, path: str) -> str | None:
        where = join_path(path, key)
        value = fields.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.report(
                where,
                f"must be a store product id (a string) or null, got {describe(value)}"
                f"{yaml_hint(value)}",
            )
            return None
        if not value.strip() or len(value) > MAX_STORE_PRODUCT_ID_LENGTH:
            self.report(
                where,
                "must be a non-blank string of at most "
                f"{MAX_STORE_PRODUCT_ID_LENGTH} characters, or null",
            )
            return None
        if CONTROL_CHARACTERS.search(value):
            self.report(where, "must not contain control characters")
            return None
        self.claim_store_product_id(key, value, where)
        return value

    def claim_store_product_id(self, key: str, value: str, path: str) -> None:
        first = self.store_product_paths[key]
        if value in first:
            self.report(
                path,
                f"{value!r} is already the {key} of {first[value]}; one store product maps "
                "to one product",
            )
        else:
            first[value] = path.rsplit(".", 1)[0]


class _StrictSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key repeated within one mapping.

    Plain PyYAML keeps the last value, so a catalog with two `amount:` lines would
    silently grant one of them.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        # Only the mapping's own keys: keys merged in with `<<` are meant to be overridden.
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {exc}"


def _grant_entitlement(value: object) -> str | None:
    """The entitlement id a grant names, even when the grant is otherwise invalid."""
    if isinstance(value, Mapping):
        entitlement_id = value.get("entitlement")
        if isinstance(entitlement_id, str):
            return entitlement_id
    return None


_T = TypeVar("_T")


def _built(values: Sequence[_T | None]) -> list[_T]:
    """The built models, once no problem was found (so every one was built)."""
    built = [value for value in values if value is not None]
    if len(built) != len(values):
        raise InvariantViolation("a catalog item failed validation without a problem")
    return built
