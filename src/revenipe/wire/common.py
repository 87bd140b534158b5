"""What every shape shares: timestamps, documentation metadata and the error body.

The shapes are `TypedDict`s (this module's `TypedDict` is one pydantic can read on this
Python, to write the OpenAPI document). Nothing here imports pydantic: `Doc` and
`OMITTED` are plain objects that pydantic finds by their `__get_pydantic_json_schema__`
hook, so the CLI builds its output without loading the server's libraries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, overload

if sys.version_info >= (3, 12):
    from typing import TypedDict as TypedDict
else:  # pydantic reads typing_extensions' TypedDict only, before 3.12 (a 20 ms import)
    from typing_extensions import TypedDict as TypedDict

if TYPE_CHECKING:
    from revenipe.catalog import CatalogError

JsonSchema = dict[str, Any]


class Doc:
    """A field's description (and examples) in the OpenAPI document."""

    __slots__ = ("description", "examples")

    def __init__(self, description: str, examples: list[Any] | None = None) -> None:
        self.description = description
        self.examples = examples

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: Callable[[Any], JsonSchema]
    ) -> JsonSchema:
        schema = handler(core_schema)
        schema["description"] = self.description
        if self.examples is not None:
            schema["examples"] = self.examples
        return schema


class _Omitted:
    """Marks a member that is left out of the answer rather than sent as null: documented
    as nullable with a null default, as the response models always described it."""

    __slots__ = ()

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: Callable[[Any], JsonSchema]
    ) -> JsonSchema:
        schema = handler(core_schema)
        schema["default"] = None
        return schema


OMITTED = _Omitted()

Timestamp = Annotated[str, Doc("ISO-8601, UTC", examples=["2026-11-25T10:00:00Z"])]


@overload
def timestamp(moment: datetime) -> str: ...
@overload
def timestamp(moment: None) -> None: ...
@overload
def timestamp(moment: datetime | None) -> str | None: ...
def timestamp(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with a `Z`, as every answer writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ErrorOut(TypedDict):
    code: str
    message: str


class CatalogProblemOut(TypedDict):
    path: str
    message: str


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """Every error answer: `code` and `message`, sometimes `field` or `problems` after."""
    return {"code": code, "message": message, **extra}


def catalog_problems_to_wire(error: CatalogError) -> list[CatalogProblemOut]:
    """An invalid catalog's error body lists each problem: where, and why."""
    return [{"path": p.path, "message": p.message} for p in error.problems]
