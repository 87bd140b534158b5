"""Keyset pagination: a page is "the rows after this key", so reading page 10,000 costs
what page 1 costs (no OFFSET). Links carry the last key shown as `after`; going back is
going to the first page (a keyset has no cheap "previous")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

T = TypeVar("T")

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class PageLinks:
    first: str | None
    """The first page, when this one is not it."""
    next: str | None
    """The page after this one, when there is more."""


def link(path: str, params: Mapping[str, str | int | None]) -> str:
    """`path?a=1&b=2`, leaving out empty parameters."""
    kept = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def split_page(rows: Sequence[T], size: int) -> tuple[list[T], bool]:
    """Rows read with LIMIT size + 1: the page, and whether there is more after it."""
    return list(rows[:size]), len(rows) > size


def page_links(
    path: str,
    params: Mapping[str, str | int | None],
    *,
    after: str | None,
    last_key: str | None,
    more: bool,
    cursor: str = "after",
) -> PageLinks:
    """Links of a page read after `after` (None: the first page), whose last row has
    `last_key`; `params` are the page's filters, kept in both links; `cursor` names the
    key's parameter (a page with two lists pages each under its own name)."""
    first = link(path, params) if after else None
    following = link(path, {**params, cursor: last_key}) if more and last_key else None
    return PageLinks(first, following)
