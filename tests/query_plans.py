"""What SQLite's planner does with the statements a test ran: the query-plan tests'
shared helpers (importable as `query_plans`: tests/ is on the path).

A test lists the tables whose size grows with customers or history (each suite has its
own), traces every statement run on a SQLite connection while it works, then asks
`growing_scans` of each: a plan that visits every row of a growing table is a cost that
grows with the data, not with the answer."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.pool import Pool


@contextlib.contextmanager
def traced_statements() -> Iterator[list[str]]:
    """Every statement run on any SQLite connection opened inside the block."""
    seen: list[str] = []

    def trace(dbapi_connection: object, _record: object) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(seen.append)

    event.listen(Pool, "connect", trace)
    try:
        yield seen
    finally:
        event.remove(Pool, "connect", trace)


def query_plan(database: Path, statement: str) -> list[str]:
    with sqlite3.connect(database) as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]


def growing_scans(database: Path, statement: str, growing: Collection[str]) -> list[str]:
    """The steps of the statement's plan whose cost grows with a table rather than with
    the answer. "SCAN t" and "SCAN t USING [COVERING] INDEX i" both visit every row of t
    ("SEARCH t USING ..." is a lookup). A page (a statement with LIMIT) sorted in a
    temporary tree has read every matching row first, however small the page."""
    plan = query_plan(database, statement)
    scans = [step for step in plan if step.startswith("SCAN ") and step.split()[1] in growing]
    if " LIMIT " in statement:
        scans += [step for step in plan if "TEMP B-TREE" in step]
    return scans
