"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL: REVENIPE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test)
names a server; each test session creates its own database there and drops it at the
end. When the server is unreachable the PostgreSQL half is skipped locally, with the
command that starts it, and FAILS when the CI environment variable is set.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import revenipe

from support import DEMO_CATALOG, Clock, unavailable

POSTGRES_ADMIN_URL = os.environ.get(
    "REVENIPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
START_POSTGRES_HINT = (
    "PostgreSQL is not reachable at {url}. Start it with\n"
    "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "or point REVENIPE_TEST_POSTGRES_URL at a server where the user may CREATE DATABASE."
)


def _admin_conninfo() -> str:
    return POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def _new_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    try:
        admin = psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(START_POSTGRES_HINT.format(url=POSTGRES_ADMIN_URL) + f"\n({exc})")
    name = f"revenipe_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = _admin_conninfo().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (this xdist worker)."""
    with _new_postgres_database() as url:
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, with nothing in it yet (for what
    depends on the tables' history, such as the plans PostgreSQL caches)."""
    with _new_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a new SQLite file per test, or this session's PostgreSQL database.

    Tests on the shared PostgreSQL database stay isolated by creating their own app.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'revenipe.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(database_url: str, clock: Clock) -> Iterator[revenipe.Backend]:
    with revenipe.open(database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def demo_catalog() -> revenipe.Catalog:
    return revenipe.load_catalog(DEMO_CATALOG)


@pytest.fixture
def app(backend: revenipe.Backend, demo_catalog: revenipe.Catalog) -> revenipe.App:
    """A new app with the demo catalog (free tier: 100 monthly credits by default)."""
    created = backend.create_app("test app", demo_catalog)
    return backend.app(created.app.id)
