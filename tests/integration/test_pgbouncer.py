"""revenipe behind a real pooler in transaction mode (Debian's PgBouncer, installed by
`scripts/setup --tests`): with `?prepare=off` in the URL (storage/postgres_engine) every
track succeeds and charges exactly once; without it, a statement revenipe prepared on
one server connection is unknown on the next, which is why the option exists.

PgBouncer missing: skipped locally with the command that installs it, FAILS under CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

import revenipe
from revenipe.catalog import load_catalog
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage.pg_pipeline import PREPARE_LIMIT

from support import installed

CATALOG = "entitlements:\n  - {id: credits, name: Credits, type: metered}\n"
SERVER_CONNECTIONS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bouncer(postgres_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test database, at most
    `SERVER_CONNECTIONS` server connections; its URL (for revenipe, without options)."""
    binary = installed("pgbouncer", also_in="/usr/sbin")
    target = make_url(postgres_url)
    port = _free_port()
    # Not under pytest's tmp_path: its parents are private to the user running the
    # tests, and PgBouncer runs as `postgres` when that user is root.
    folder = Path(tempfile.mkdtemp(prefix="revenipe-pgbouncer-"))
    folder.chmod(0o777)
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.host or '127.0.0.1'} port={target.port or 5432} "
        f"user={target.username or 'postgres'}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmax_client_conn = 100\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    config.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"postgresql://{target.username or 'postgres'}@127.0.0.1:{port}/{target.database}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"PgBouncer did not start: {output}", pytrace=False)
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _app(url: str) -> tuple[revenipe.Backend, revenipe.App]:
    backend = revenipe.open(url)
    created = backend.create_app(f"bouncer {uuid.uuid4().hex[:6]}", load_catalog(CATALOG))
    return backend, backend.app(created.app.id)


def test_tracks_through_a_transaction_pooler_with_prepare_off(bouncer: str) -> None:
    backend, app = _app(f"{bouncer}?prepare=off")
    try:
        customers = ["alice", "bob"]
        for customer in customers:
            app.grant_entitlement(customer, "credits", 1_000)
        errors: list[BaseException] = []
        answered: list[str] = []

        def tracks(thread: int) -> None:
            for i in range(40):
                key = f"t{thread}-{i}"
                try:
                    result = app.track(customers[thread % 2], "credits", 3, idempotency_key=key)
                    assert result.success, result
                    # A retry of the same key is a replay, whatever server connection it gets.
                    again = app.track(customers[thread % 2], "credits", 3, idempotency_key=key)
                    assert again.replayed and again.usage_event_id == result.usage_event_id
                    answered.append(key)
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=tracks, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(answered) == 160
        # 80 tracks of 3 per customer, each charged exactly once.
        for customer in customers:
            assert app.check(customer, "credits", 1).available == 1_000 - 80 * 3
    finally:
        backend.close()


def test_prepared_statements_fail_behind_a_transaction_pooler(bouncer: str) -> None:
    """Why `prepare=off` exists: revenipe's connection prepared its statements on one
    server connection; once that one is busy, its next transaction gets the other."""
    backend, app = _app(bouncer)
    try:
        app.grant_entitlement("alice", "credits", 100)
        assert app.track("alice", "credits", 1, idempotency_key="first").success
        with psycopg.connect(bouncer) as blocker:
            # The pooler hands out the server connection used last (LIFO): the one
            # holding revenipe's statements, kept by this open transaction.
            blocker.execute("SELECT 1")
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                app.track("alice", "credits", 1, idempotency_key="second")
    finally:
        backend.close()


def test_the_prepare_option_takes_on_or_off_only(postgres_url: str) -> None:
    for value in ("no", "false", "1", "on&prepare=off"):
        with pytest.raises(RevenipeError) as raised:
            revenipe.open(f"{postgres_url}?prepare={value}")
        assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_the_prepare_option_ignores_case(postgres_url: str) -> None:
    backend = revenipe.open(f"{postgres_url}?prepare=OFF")
    try:
        with backend.database.engine.connect() as conn:
            assert conn.connection.info[PREPARE_LIMIT] == 0
    finally:
        backend.close()
