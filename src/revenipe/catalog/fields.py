"""Typed field checks shared by the catalog validator: each reads one field, reports
what is wrong with it (by path, saying why) and returns the value or None.

A checker collects every problem instead of stopping at the first; `loader` builds the
catalog's entities on top of these.
"""

import difflib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum, auto
from typing import Any, TypeVar

from revenipe.engine.alerts import Threshold, ThresholdKind
from revenipe.engine.amounts import ID_PATTERN, MAX_AMOUNT
from revenipe.engine.periods import Duration, parse_duration

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_STORE_PRODUCT_ID_LENGTH = 200
MAX_PRIORITY = 1_000_000
"""Priorities range from ``-MAX_PRIORITY`` to ``MAX_PRIORITY``."""

_CURRENCY = re.compile(r"[a-z]{3}")
# Newlines and tabs are fine in a description (YAML block scalars), not in a name.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_DESCRIPTION_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_ALERT_FIELDS = ("remaining", "remaining_percent")
MAX_ALERTS = 20
"""Thresholds per usage key or entitlement."""

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One thing wrong with a catalog: where (a field path) and why."""

    path: str
    message: str
    # Where in the YAML text (1-based), when the problem came from `load_catalog`: the
    # field's value, or the nearest enclosing item when the field is missing. Not part
    # of what a problem is: the same problem read from JSON has no line.
    line: int | None = field(default=None, compare=False)
    column: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Missing(Enum):
    MISSING = auto()


MISSING = Missing.MISSING


class FieldChecker:
    """Collects problems; each method checks one field and returns None on a problem."""

    def __init__(self) -> None:
        self.problems: list[CatalogProblem] = []

    def report(self, path: str, message: str) -> None:
        self.problems.append(CatalogProblem(path, message))

    # -- shapes -----------------------------------------------------------------------

    def mapping(self, value: object, path: str, what: str) -> Mapping[Any, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.report(path, f"must be {what} (a mapping of fields), got {describe(value)}")
        return None

    def check_fields(
        self,
        fields: Mapping[Any, Any],
        path: str,
        allowed: Collection[str],
        *,
        forbidden: Mapping[str, str] | None = None,
    ) -> None:
        for key in fields:
            if not isinstance(key, str):
                self.report(f"{path}[{key!r}]", f"field names must be strings, got {describe(key)}")
            elif forbidden and key in forbidden:
                self.report(join_path(path, key), forbidden[key])
            elif key not in allowed:
                self.report(join_path(path, key), unknown_field(key, allowed))

    def items(self, fields: Mapping[Any, Any], key: str, path: str) -> Sequence[object]:
        value = fields.get(key)
        if value is None:
            return ()
        if isinstance(value, list | tuple):
            return value
        self.report(join_path(path, key), f"must be a list, got {describe(value)}")
        return ()

    # -- scalars ----------------------------------------------------------------------

    def catalog_id(self, fields: Mapping[Any, Any], path: str) -> str | None:
        where = f"{path}.id"
        value = fields.get("id", MISSING)
        if value is MISSING or value is None:
            self.report(where, "is required: 1-64 characters of a-z, 0-9, '_', '-', '.'")
            return None
        # fullmatch: ID_PATTERN ends in `$`, which would also accept a trailing newline.
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            self.report(
                where,
                "must be 1-64 characters of a-z, 0-9, '_', '-', '.', "
                f"got {describe(value)}{yaml_hint(value)}",
            )
            return None
        return value

    def name(self, fields: Mapping[Any, Any], path: str) -> str | None:
        where = f"{path}.name"
        value = fields.get("name", MISSING)
        if value is MISSING or value is None:
            self.report(
                where, f"is required: a non-empty string of at most {MAX_NAME_LENGTH} characters"
            )
            return None
        if not isinstance(value, str):
            self.report(where, f"must be a string, got {describe(value)}{yaml_hint(value)}")
            return None
        if not value.strip():
            self.report(where, "must not be blank")
            return None
        if len(value) > MAX_NAME_LENGTH:
            self.report(where, f"must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
            return None
        if CONTROL_CHARACTERS.search(value):
            self.report(where, "must not contain control characters such as line breaks")
            return None
        return value

    def description(self, fields: Mapping[Any, Any], path: str) -> str | None:
        where = f"{path}.description"
        value = fields.get("description")
        if value is None:
            return None
        if not isinstance(value, str):
            self.report(where, f"must be a string, got {describe(value)}{yaml_hint(value)}")
            return None
        if len(value) > MAX_DESCRIPTION_LENGTH:
            self.report(
                where,
                f"must be at most {MAX_DESCRIPTION_LENGTH} characters, got {len(value)}",
            )
            return None
        if _DESCRIPTION_CONTROL_CHARACTERS.search(value):
            self.report(where, "must not contain control characters other than tabs and newlines")
            return None
        return value

    def currency(self, fields: Mapping[Any, Any], path: str) -> str | None:
        value = fields.get("currency")
        if value is None:
            return None
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            self.report(
                f"{path}.currency",
                "must be a three-letter lowercase ISO 4217 code such as 'usd', "
                f"got {describe(value)}",
            )
            return None
        return value

    def boolean(self, fields: Mapping[Any, Any], key: str, path: str) -> bool | None:
        value = fields.get(key, MISSING)
        if value is MISSING:
            return False
        if not isinstance(value, bool):
            self.report(join_path(path, key), f"must be true or false, got {describe(value)}")
            return None
        return value

    def integer(
        self,
        fields: Mapping[Any, Any],
        key: str,
        path: str,
        low: int,
        high: int,
        *,
        default: int | None,
    ) -> int | None:
        """The integer at `key`; `default` when absent, None (reported) when invalid.

        A default of None also accepts an explicit null.
        """
        value = fields.get(key, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        where = join_path(path, key)
        # bool is a subclass of int; 5.0 and "5" are not integers either.
        if isinstance(value, bool) or not isinstance(value, int):
            self.report(
                where,
                f"must be a whole number from {low} to {high}, got {describe(value)}",
            )
            return None
        if not low <= value <= high:
            self.report(where, f"must be from {low} to {high}, got {value}")
            return None
        return value

    def choice(
        self,
        fields: Mapping[Any, Any],
        key: str,
        path: str,
        choices: type[_E],
        *,
        default: _E | Missing | None = MISSING,
    ) -> _E | None:
        """The member named at `key`; None (reported) when invalid.

        Without a `default` the field is required; a default of None also accepts null.
        """
        where = join_path(path, key)
        allowed = ", ".join(member.value for member in choices)
        value = fields.get(key, MISSING)
        if value is None and default is MISSING:
            value = MISSING
        if value is MISSING or (value is None and default is None):
            if default is MISSING:
                self.report(where, f"is required: one of {allowed}")
                return None
            return default
        if isinstance(value, str):
            try:
                return choices(value)
            except ValueError:
                pass
        self.report(where, f"must be one of {allowed}, got {describe(value)}")
        return None

    def duration(self, fields: Mapping[Any, Any], key: str, path: str) -> Duration | None:
        value = fields.get(key)
        if value is None:
            return None
        where = join_path(path, key)
        if not isinstance(value, str):
            self.report(
                where,
                f"must be an ISO-8601 duration such as P30D or P1M, got {describe(value)}",
            )
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.report(where, str(exc))
            return None

    def costs(
        self, fields: Mapping[Any, Any], path: str, *, claim: Callable[[str, str], bool]
    ) -> tuple[tuple[str, int], ...] | None:
        """A usage key's `costs: {action: units}`; `claim` takes each action id in the
        namespace it shares with entitlements and usage keys (False: taken)."""
        value = fields.get("costs")
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.report(
                path,
                "must be a mapping of action ids to their price in this key's units, "
                f"such as {{image_generation: 5}}, got {describe(value)}",
            )
            return None
        costs: list[tuple[str, int]] = []
        valid = True
        for action, price in value.items():
            where = f"{path}[{action!r}]" if not isinstance(action, str) else f"{path}.{action}"
            if not isinstance(action, str) or not ID_PATTERN.fullmatch(action):
                self.report(
                    where,
                    "an action id must be 1-64 characters of a-z, 0-9, '_', '-', '.', "
                    f"got {describe(action)}",
                )
                valid = False
                continue
            if not claim(action, where):
                valid = False
            if isinstance(price, bool) or not isinstance(price, int):
                self.report(
                    where,
                    f"the price of {action!r} must be a whole number from 1 to {MAX_AMOUNT}, "
                    f"got {describe(price)}{yaml_hint(price)}",
                )
                valid = False
                continue
            if not 1 <= price <= MAX_AMOUNT:
                self.report(
                    where, f"the price of {action!r} must be from 1 to {MAX_AMOUNT}, got {price}"
                )
                valid = False
                continue
            costs.append((action, price))
        return tuple(costs) if valid else None

    def alerts(self, fields: Mapping[Any, Any], path: str) -> tuple[Threshold, ...] | None:
        """`alerts: [{remaining_percent: 20}, {remaining: 0}]`: each item names one kind."""
        where = f"{path}.alerts"
        value = fields.get("alerts", MISSING)
        if value is MISSING or value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.report(where, f"must be a list of thresholds, got {describe(value)}")
            return None
        if len(value) > MAX_ALERTS:
            self.report(where, f"at most {MAX_ALERTS} thresholds, got {len(value)}")
            return None
        thresholds: list[Threshold] = []
        for index, item in enumerate(value):
            threshold = self.alert(item, f"{where}[{index}]")
            if threshold is None:
                continue
            if threshold in thresholds:
                self.report(f"{where}[{index}]", f"{threshold.to_document()} is listed twice")
                continue
            thresholds.append(threshold)
        if len(thresholds) != len(value):
            return None
        return tuple(thresholds)

    def alert(self, value: object, path: str) -> Threshold | None:
        item = self.mapping(value, path, "a threshold ({remaining: N} or {remaining_percent: P})")
        if item is None:
            return None
        self.check_fields(item, path, _ALERT_FIELDS)
        kinds = [k for k in _ALERT_FIELDS if k in item]
        if len(kinds) != 1:
            self.report(path, "must name exactly one of remaining or remaining_percent")
            return None
        kind = ThresholdKind(kinds[0])
        high = 100 if kind is ThresholdKind.REMAINING_PERCENT else MAX_AMOUNT
        amount = self.integer(item, kind.value, path, 0, high, default=None)
        if amount is None:
            if item.get(kind.value) is None:
                self.report(join_path(path, kind.value), "must be a whole number")
            return None
        return Threshold(kind, amount)


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number with a decimal point ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 80 else value[:77] + "..."
        return f"the string {shown!r}" if value else "an empty string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def yaml_hint(value: object) -> str:
    if isinstance(value, bool):
        return " (YAML reads yes, no, on, off, true and false as booleans; quote the text)"
    if isinstance(value, int | float):
        return " (quote it to make it text)"
    return ""


def unknown_field(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    return f"unknown field; expected one of {', '.join(allowed)}"


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
