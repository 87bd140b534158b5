"""No dashboard page reads a growing table from end to end (docs/adr/0013): every
statement the customer pages run is recorded and SQLite is asked for its plan; a full
SCAN of a table that grows with customers or history, or a page sorted in a temporary
tree, fails the test. This is what keeps the pages fast at 10^6 customers: each reads
its own rows through an index, whatever the size of the app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from query_plans import growing_scans, traced_statements

from .conftest import Dash

GROWING = {
    "customers",
    "access_sources",
    "grants",
    "usage_events",
    "reversals",
    "ledger_entries",
    "operator_sessions",
    "sign_in_failures",
    "sign_in_links",
}


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement run on any SQLite connection opened while the test runs."""
    with traced_statements() as seen:
        yield seen


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_customer_pages_never_scan_a_growing_table(
    statements: list[str], dash: Dash, database_url: str
) -> None:
    dash.sign_in(password="a wrong password")
    dash.signed_in()
    client_id = dash.customer("plan-user")["client_id"]
    for n in range(3):
        dash.customer(f"plan-{n}")
    dash.api("POST", "/v1/customers/plan-user/track", json={"id": "credits", "value": 2})
    statements.clear()  # from here on: what the dashboard runs
    base = dash.url(f"customers/{client_id}")
    pages = [
        dash.url("customers"),
        dash.url("customers") + "?after=" + client_id,
        dash.url("customers") + "?q=plan",
        dash.url("customers") + "?q=plan&after=plan-1",
        dash.url("customers") + "?q=" + client_id,
        base,
        base + "?key=credits&since=2026-01-01&until=2026-12-31",
        base + "?key=monthly_credits&events_before=use_z&entries_before=99",
        base + "/events.csv?key=credits",
        base + "/ledger.csv?key=credits&since=2026-01-01",
    ]
    for page in pages:
        response = dash.http.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    recorded = "\n".join(statements)
    for read in ("external_id >=", "FROM ledger_entries", "FROM usage_events", "FROM grants"):
        assert read in recorded, read  # the pages' own reads were recorded
    database = Path(database_url.removeprefix("sqlite:///"))
    problems = {}
    for statement in set(statements):
        if not re.match(r"\s*SELECT", statement, re.I):
            continue
        scans = growing_scans(database, statement, GROWING)
        if scans:
            problems[statement] = scans
    assert not problems, problems
