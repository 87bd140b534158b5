"""End-to-end fixtures: real `revenipe serve` processes over HTTP, on a fresh database.

Every test gets its own database (a SQLite file, or a PostgreSQL database created for
the test and dropped after it), because only the first start of an empty database
creates an app and prints its id and secret key. PostgreSQL is reached through the
session fixture `postgres_url` of tests/conftest.py, so an unreachable server is
skipped locally and FAILS when the CI environment variable is set.

    def test_something(servers):
        server = servers.start()              # workers=1, the e2e catalog
        other = servers.start(reuse=server)   # a second process on the same database

Tests choose the database kind with
`@pytest.mark.parametrize("e2e_database", ["postgresql"], indirect=True)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from e2e.harness import E2E_CATALOG, Servers


@pytest.fixture(params=["sqlite", "postgresql"])
def e2e_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for this test's servers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'e2e.db'}"
        return
    # The session database of tests/conftest.py (skipped locally, failed on CI when
    # PostgreSQL is unreachable); from it we create and drop a database per test.
    session_url: str = request.getfixturevalue("postgres_url")
    name = f"revenipe_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(session_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{session_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(E2E_CATALOG)
    return path


@pytest.fixture
def servers(e2e_database: str, catalog_file: Path) -> Iterator[Servers]:
    """Factory of server processes on `e2e_database`, all stopped before it is dropped."""
    started = Servers(e2e_database, catalog_file)
    try:
        yield started
    finally:
        started.stop_all()
