"""Storage reads rows by column name and converts values in one place (`driver_sql`):
times written as SQLAlchemy writes them on SQLite and read back as aware UTC datetimes,
booleans as bool, a row of the wrong width refused. And the storage modules keep to
their naming rules (storage/__init__.py)."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from revenipe.engine.errors import InvariantViolation
from revenipe.storage.driver_sql import Columns, time_in, time_out
from revenipe.storage.schema import customers

STORAGE = Path(__file__).resolve().parents[2] / "src" / "revenipe" / "storage"
AGGREGATES = [
    "apps",
    "catalogs",
    "customers",
    "sources",
    "grants",
    "ledger",
    "usage_events",
    "reversals",
    "reservations",
    "purchases",
    "webhooks",
]
PREFIXES = ("get_", "require_", "find_", "list_", "map_", "has_", "insert_", "update_")
PREFIXES += ("save_", "delete_", "iter_")
TRACK_ROUND_TRIPS = {"lock_for_track", "record_track"}


class _Sqlite:
    class dialect:  # stands in for Connection.dialect
        name = "sqlite"


SQLITE: Any = _Sqlite()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 5, 23, 3, 36, 938983, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_times_are_written_as_sqlalchemy_writes_them_and_read_back_in_utc(
    moment: datetime,
) -> None:
    stored = time_in(SQLITE, moment)
    assert stored == moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    read = time_out(stored)
    assert read == moment
    assert read is not None and read.tzinfo is UTC


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        time_in(SQLITE, datetime(2026, 1, 1))


def test_a_row_is_read_by_column_name_with_its_values_converted() -> None:
    columns = Columns(customers, ("id", "anonymous", "created_at", "due_at"))
    assert columns.select == "id, anonymous, created_at, due_at"
    row = columns.read(("cus_1", 1, "2026-12-05 23:03:36.938983", None))
    assert row == {
        "id": "cus_1",
        "anonymous": True,
        "created_at": datetime(2026, 12, 5, 23, 3, 36, 938983, tzinfo=UTC),
        "due_at": None,
    }
    with pytest.raises(ValueError, match="unpack"):
        columns.read(("cus_1", 1, "2026-12-05 23:03:36.938983"))
    with pytest.raises(InvariantViolation, match=r"customers\.created_at"):
        columns.read(("cus_1", 1, None, None))


@pytest.mark.parametrize("module", AGGREGATES)
def test_storage_functions_follow_the_naming_rules(module: str) -> None:
    path = STORAGE / f"{module}.py"
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{module}.py: the docstring names its tables"
    assert re.search(r"`\w+`", ast.get_docstring(tree) or "")
    public = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    ]
    wrong = [
        name for name in public if not name.startswith(PREFIXES) and name not in TRACK_ROUND_TRIPS
    ]
    assert wrong == [], f"storage/{module}.py: rename per storage/__init__.py: {wrong}"
    assert len(path.read_text().splitlines()) < 300
