"""Throw-away databases to measure on: SQLite files in a temporary folder, or fresh
PostgreSQL databases created through an admin URL and dropped at the end."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from revenipe.engine.errors import ErrorCode, InvariantViolation, RevenipeError
from revenipe.storage.postgres_engine import PREPARE_OPTION, prepares

START_POSTGRES_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "give --postgres-url of a server where the user may CREATE DATABASE, "
    "or measure SQLite only with --database sqlite"
)


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style PostgreSQL URL as libpq (psycopg) takes it, without revenipe's
    own options (`?prepare=off`, which libpq would refuse)."""
    parsed = make_url(url).difference_update_query([PREPARE_OPTION])
    if parsed.drivername in ("postgresql+psycopg", "postgres"):
        parsed = parsed.set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def libpq_connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A psycopg connection for the bench's raw-SQL callers, preparing statements as
    revenipe's own connections do: none with `?prepare=off` (behind a pooler in
    transaction mode, where psycopg's prepared statements fail as revenipe's would)."""
    conn = psycopg.connect(libpq_url(url), autocommit=autocommit)
    if not prepares(make_url(url)):
        conn.prepare_threshold = None
    return conn


@dataclass
class BenchDatabases:
    """Where one database kind's measurements run; creates and removes databases."""

    kind: str
    """"sqlite" or "postgresql"."""
    admin_url: str | None = None
    last_version: str | None = None
    _folder: Path | None = None
    _created: list[str] = field(default_factory=list)
    _tag: str = field(default_factory=lambda: secrets.token_hex(4))

    def new_url(self, name: str) -> str:
        """A URL of a new, empty database (revenipe creates the schema when opening it)."""
        if self.kind == "sqlite":
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="revenipe_bench_"))
            return f"sqlite:///{self._folder / (name + '.db')}"
        if self.admin_url is None:
            raise InvariantViolation("a PostgreSQL bench database needs the admin URL")
        database = f"revenipe_bench_{self._tag}_{name}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        self._created.append(database)
        # revenipe's own options stay: the bench's revenipe runs as the user's would.
        url = make_url(self.admin_url).set(database=database)
        return url.render_as_string(hide_password=False)

    def version(self) -> str:
        if self.kind == "sqlite":
            self.last_version = sqlite3.sqlite_version
        else:
            with self._admin() as admin:
                row = admin.execute("SHOW server_version").fetchone()
            self.last_version = str(row[0]) if row else "unknown"
        return self.last_version

    def autovacuum(self) -> bool | None:
        """PostgreSQL: whether the server runs autovacuum (None on SQLite)."""
        if self.kind == "sqlite":
            return None
        with self._admin() as admin:
            row = admin.execute("SHOW autovacuum").fetchone()
        return row is not None and str(row[0]) == "on"

    def check_reachable(self) -> None:
        """Raise a clear error when the PostgreSQL server cannot be used."""
        if self.kind == "postgresql":
            try:
                with self._admin():
                    pass
            except psycopg.Error as exc:
                raise RevenipeError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"PostgreSQL is not reachable at {self.admin_url}: "
                    f"{' '.join(str(exc).split())}; {START_POSTGRES_HINT}",
                ) from None

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        if self.admin_url is None:
            raise InvariantViolation("a PostgreSQL bench database needs the admin URL")
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True, connect_timeout=5) as conn:
            yield conn

    def cleanup(self) -> None:
        """Drop every database this object created (forcing out leftover sessions)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if self._created:
            with self._admin() as admin:
                for database in self._created:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            self._created.clear()


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///path` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite file URL: {url}")
    return url[len(prefix) :]


def settle(url: str) -> None:
    """Pay the write debt of the parts run before on the database at `url`, so that the
    next part measures its own work: on PostgreSQL a `CHECKPOINT` (the dirty pages of
    ~10^5 tracks, which a timed or size-triggered checkpoint would otherwise flush
    during the measured runs, stalling commits) and `VACUUM ANALYZE` (which autovacuum
    would otherwise run then); on SQLite, the write-ahead log checkpointed."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return
    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
        # A user without the right (superuser or pg_checkpoint) skips the checkpoint.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
        conn.execute("VACUUM ANALYZE")
