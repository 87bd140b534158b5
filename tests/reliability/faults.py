"""Faults a test injects on purpose: a private PostgreSQL cluster it may restart, and a
TCP proxy that cuts connections.

The shared PostgreSQL at 127.0.0.1:5432 serves other test runs at the same time and is
never stopped, restarted or reconfigured here. `PrivatePostgres` runs a cluster of its
own (`initdb` on a temporary directory, a free port, the `postgres` system user when run
as root, since initdb refuses root) that a test may crash (`pg_ctl stop -m immediate`) and
start again. `CuttingProxy` sits between a server and a database and can drop every open
connection, or refuse new ones for a while.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

PG_BIN_ENV = "REVENIPE_TEST_PG_BIN"
HOW_TO = (
    "the database-fault tests run a private PostgreSQL cluster and need the PostgreSQL "
    "server binaries (initdb, pg_ctl): install them with `apt-get install postgresql` "
    f"or point {PG_BIN_ENV} at their directory (e.g. /usr/lib/postgresql/15/bin)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unavailable(reason: str) -> None:
    """Skip locally with how to fix it; fail loudly under CI."""
    message = f"{reason}; {HOW_TO}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _pg_bin() -> Path | None:
    configured = os.environ.get(PG_BIN_ENV)
    candidates = [configured] if configured else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            unavailable("no initdb found")
        assert bin_dir is not None
        self.bin = bin_dir
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                unavailable("running as root, and runuser (to run initdb as postgres) is missing")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="revenipe-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if self.as_user:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                shutil.rmtree(self.root, ignore_errors=True)
                unavailable(f"cannot give {self.root} to the postgres user ({exc})")
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "revenipe")

    @property
    def url(self) -> str:
        return self.url_via(self.port)

    @staticmethod
    def url_via(port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/revenipe?connect_timeout=3"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.root)
        if check and done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            unavailable(
                f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}\n{log[-2000:]}"
            )

    def start(self) -> None:
        # fsync off: the faults here are process crashes, which never lose what the
        # kernel already holds; it keeps a shared 2-core machine fast.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def crash(self) -> None:
        """Stop every PostgreSQL process at once, as a crash would (recovery on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to `upstream_port` that can cut and refuse connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=3)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, target), daemon=True, name="proxy-pump"
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        _close(sock)

    def cut(self) -> int:
        """Drop every open connection, both ways; returns how many were open."""
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        for sock in victims:
            _close(sock)
        self.cuts += 1
        return len(victims) // 2

    @contextlib.contextmanager
    def outage(self) -> object:
        """While inside: every connection is cut and new ones are closed at once."""
        self._refusing = True
        self.cut()
        try:
            yield self
        finally:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def wait_for(condition: object, timeout_s: float, what: str) -> float:
    """Poll `condition()` until true; return the seconds it took; fail after timeout."""
    assert callable(condition)
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not after {timeout_s} s")
