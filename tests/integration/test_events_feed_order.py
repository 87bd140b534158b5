"""PostgreSQL: `GET /v1/events` never lets a reader page past an event that commits
after a later one (storage.outbound_events.events_in_flight, docs/adr/0019).

The events here are written by plain transactions of other connections, held open as a
slow track's transaction would be: the order of their commits is the test's to choose."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

import revenipe
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.outbound import endpoints as endpoint_service

from support import DEMO_CATALOG


@pytest.fixture(params=["read committed", "repeatable read"])
def backend(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[revenipe.Backend]:
    """PostgreSQL's default isolation, and a server set to another: the page must not be
    read in a snapshot taken before the slow transaction ended."""
    value = request.param.replace(" ", "\\ ")  # libpq's options escape a space so
    isolation = quote(f"-c default_transaction_isolation={value}")
    separator = "&" if "?" in postgres_url else "?"
    with revenipe.open(f"{postgres_url}{separator}options={isolation}") as opened:
        with opened.database.read() as conn:
            shown = conn.exec_driver_sql("SHOW default_transaction_isolation").scalar()
        assert shown == request.param
        yield opened


@pytest.fixture
def app(backend: revenipe.Backend) -> revenipe.App:
    return backend.app(backend.create_app("feed", revenipe.load_catalog(DEMO_CATALOG)).app.id)


def _write_event(conn: psycopg.Connection, app_id: str, name: str) -> int:
    """An event of the app, in `conn`'s open transaction; its `seq`."""
    row = conn.execute(
        "INSERT INTO outbound_events (id, app_id, type, body, created_at) "
        "VALUES (%s, %s, 'test.event', '{}', now()) RETURNING seq",
        (f"evt_{name[:8]}_{uuid.uuid4().hex[:24]}", app_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _listed(app: revenipe.App, after: int = 0) -> list[int]:
    rows = endpoint_service.list_events(app.context, app.app_id, after=after, limit=100)
    return [row.seq for row in rows]


def test_an_event_committed_after_a_later_one_is_listed_before_it(
    app: revenipe.App, postgres_url: str
) -> None:
    """The reader waits for the slow transaction, then lists both in `seq` order. Read
    before this rule, the page was the later event alone, and a reader paging from its
    cursor never saw the earlier one."""
    with (
        psycopg.connect(postgres_url) as slow,
        psycopg.connect(postgres_url, autocommit=True) as fast,
    ):
        first = _write_event(slow, app.app_id, "slow")
        second = _write_event(fast, app.app_id, "fast")  # committed at once
        assert first < second
        pages: list[list[int]] = []
        reader = threading.Thread(target=lambda: pages.append(_listed(app)))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive(), f"listed {pages} while an earlier event was uncommitted"
        slow.commit()
        reader.join(10)
    assert pages == [[first, second]]


def test_a_transaction_left_open_too_long_makes_the_reader_retry(
    app: revenipe.App, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`database_busy` (a 503 to retry), never a page that skips the open event."""
    monkeypatch.setattr(endpoint_service, "EVENTS_FINAL_WAIT_S", 0.2)
    with (
        psycopg.connect(postgres_url) as slow,
        psycopg.connect(postgres_url, autocommit=True) as fast,
    ):
        first = _write_event(slow, app.app_id, "slow")
        second = _write_event(fast, app.app_id, "fast")
        with pytest.raises(RevenipeError) as raised:
            _listed(app)
        assert raised.value.code is ErrorCode.DATABASE_BUSY
        slow.commit()
    assert _listed(app) == [first, second]
    assert _listed(app, after=first) == [second]
    assert _listed(app, after=second) == []


def test_a_rolled_back_event_leaves_a_gap_that_stops_nothing(
    app: revenipe.App, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint_service, "EVENTS_FINAL_WAIT_S", 0.2)
    with psycopg.connect(postgres_url) as conn:
        _write_event(conn, app.app_id, "gone")
        conn.rollback()
        kept = _write_event(conn, app.app_id, "kept")
        conn.commit()
    assert _listed(app) == [kept]


def test_open_transactions_that_write_no_events_are_not_waited_for(
    app: revenipe.App, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only transactions holding the events table for writing can still commit an event
    before the newest one; a long transaction elsewhere delays no reader."""
    monkeypatch.setattr(endpoint_service, "EVENTS_FINAL_WAIT_S", 0.2)
    app.grant_entitlement("alice", "monthly_credits", 5)
    with psycopg.connect(postgres_url, autocommit=True) as fast:
        committed = _write_event(fast, app.app_id, "committed")
    with psycopg.connect(postgres_url) as other:
        other.execute(
            "UPDATE customers SET external_id = external_id WHERE app_id = %s", (app.app_id,)
        )
        other.execute("SELECT 1 FROM outbound_events LIMIT 1")  # reading them is no write
        assert _listed(app) == [committed]
        other.rollback()


def test_writers_in_another_database_of_the_server_are_not_waited_for(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database copied from a template that held the tables has the same relation ids:
    `pg_locks` must be read for this database's writers only."""
    monkeypatch.setattr(endpoint_service, "EVENTS_FINAL_WAIT_S", 0.2)
    with revenipe.open(empty_postgres_url) as backend:
        app_id = backend.create_app("feed", revenipe.load_catalog(DEMO_CATALOG)).app.id
    base, template = empty_postgres_url.rsplit("/", 1)
    sibling = f"{template}_copy"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{sibling}" TEMPLATE "{template}"')
        try:
            with (
                psycopg.connect(f"{base}/{sibling}") as elsewhere,
                revenipe.open(empty_postgres_url) as backend,
            ):
                _write_event(elsewhere, app_id, "sibling")  # left open
                app = backend.app(app_id)
                with psycopg.connect(empty_postgres_url, autocommit=True) as here:
                    committed = _write_event(here, app_id, "here")
                assert _listed(app) == [committed]
                elsewhere.rollback()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{sibling}" WITH (FORCE)')
