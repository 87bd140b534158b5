"""The end-to-end harness: real `revenipe serve` processes, reached over HTTP.

`Servers.start()` runs `python -m revenipe serve` on a free port, reads the app id and
secret key that the first start of an empty database prints, and waits for
`GET /v1/health`. `stop_all()` sends SIGTERM, then SIGKILL after 10 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from support import DEMO_CATALOG

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TOKEN_HEADER = "X-Revenipe-Customer-Token"
# One TLS context for every httpx client: building one per client costs ~50 ms of CPU
# (loading CA certificates), which adds up with one client per thread.
TLS = ssl.create_default_context()

# The demo catalog plus an add-on with descriptions, so every list of the Customer
# object can be filled.
E2E_CATALOG = (
    DEMO_CATALOG
    + """\
  - id: boost
    name: Boost
    description: Five bonus credits a month
    type: add_on
    recurring_interval: month
    price: 300
    grants:
      - entitlement: bonus_credits
        amount: 5
        reset: period
  - id: trial_plan
    name: Trial plan
    type: subscription
    recurring_interval: month
    price: 800
    trial: P7D
    grants:
      - entitlement: monthly_credits
        amount: 200
        reset: period
"""
)


@dataclass
class Server:
    """One running `revenipe serve` process."""

    process: subprocess.Popen[str]
    base_url: str
    database_url: str
    app_id: str
    secret_key: str
    output: list[str] = field(default_factory=list)
    workers: int = 1

    def describe(self) -> str:
        return f"revenipe serve at {self.base_url}, output:\n" + "".join(self.output)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def api(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the server API (secret key)."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=kwargs.pop("timeout", 30.0),
            verify=TLS,
            **kwargs,
        )

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for the client protocol (public app id, optional token)."""
        headers = {"Authorization": self.app_id, "Content-Type": "application/json"}
        if token is not None:
            headers[TOKEN_HEADER] = token
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=kwargs.pop("timeout", 30.0),
            verify=TLS,
            **kwargs,
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _fail_start(server: Server, what: str) -> NoReturn:
    pytest.fail(f"revenipe serve {what}; {server.describe()}", pytrace=False)


def _healthy(probe: httpx.Client) -> bool:
    try:
        return probe.get("/v1/health").status_code == 200
    except httpx.HTTPError:
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _value_after(lines: list[str], prefix: str) -> str | None:
    for line in list(lines):
        text = line.strip()
        if text.startswith(prefix):
            return text[len(prefix) :].strip()
    return None


class Servers:
    """Starts `revenipe serve` processes on one database; stops them all at teardown."""

    def __init__(self, database_url: str, catalog_file: Path) -> None:
        self.database_url = database_url
        self.catalog_file = catalog_file
        self.running: list[Server] = []
        self.env: dict[str, str] = {}
        """Extra environment of the servers started from now on (settings, limits)."""
        self.start_timeout_s = START_TIMEOUT_S
        """How long a start may take (longer for restarts under heavy load)."""

    def start(
        self,
        *,
        workers: int = 1,
        reuse: Server | None = None,
        port: int | None = None,
        sandbox: bool = False,
    ) -> Server:
        """A new, healthy server process; `reuse` names a server (running, or killed) on
        the same database whose app (created by its first start) the new one serves too;
        `sandbox` makes that first app a sandbox app."""
        server = self.launch(workers=workers, reuse=reuse, port=port, sandbox=sandbox)
        self.wait_healthy(server)
        return server

    def launch(
        self,
        *,
        workers: int = 1,
        reuse: Server | None = None,
        port: int | None = None,
        sandbox: bool = False,
    ) -> Server:
        """Start a server process; without `reuse`, wait only until it has created the
        app (so that a second process may be launched on the same database at once).
        `port` reuses a port (a restart after `kill`); by default a free one."""
        port = port or _free_port()
        command = [
            sys.executable,
            "-m",
            "revenipe",
            "serve",
            "--port",
            str(port),
            "--database-url",
            self.database_url,
            "--catalog",
            str(self.catalog_file),
            "--workers",
            str(workers),
            *(["--sandbox"] if sandbox else []),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("REVENIPE_DATABASE_URL", None)
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        output: list[str] = []
        reader = threading.Thread(target=_collect, args=(process.stdout, output), daemon=True)
        reader.start()
        server = Server(
            process, f"http://127.0.0.1:{port}", self.database_url, "", "", output, workers
        )
        self.running.append(server)
        if reuse is not None:
            server.app_id, server.secret_key = reuse.app_id, reuse.secret_key
            return server
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            app_id = _value_after(output, "Created app ")
            secret_key = _value_after(output, "secret key (shown once, keep it):")
            if app_id and secret_key:
                server.app_id, server.secret_key = app_id, secret_key
                return server
            if process.poll() is not None:
                reader.join(timeout=2)
                _fail_start(server, f"exited with status {process.returncode}")
            time.sleep(0.05)
        _fail_start(
            server,
            f"printed no 'Created app' and secret key lines in {self.start_timeout_s:.0f} s "
            "(was the database empty?)",
        )

    def wait_healthy(self, server: Server) -> None:
        """Poll GET /v1/health until 200 (and, with workers, until every worker is up)."""
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(base_url=server.base_url, timeout=1.0, verify=TLS) as probe:
            while time.monotonic() < deadline:
                if server.process.poll() is not None:
                    time.sleep(0.2)  # let the reader thread collect the last lines
                    _fail_start(server, f"exited with status {server.process.returncode}")
                if _healthy(probe) and self._workers_ready(server.process.pid, server.workers):
                    return
                time.sleep(0.05)
        _fail_start(server, f"not healthy after {self.start_timeout_s:.0f} s")

    def _workers_ready(self, pid: int, workers: int) -> bool:
        """With `--workers N` on SQLite: N child processes have opened the database file
        (so none of them is still importing when the test starts its requests)."""
        if workers == 1 or not self.database_url.startswith("sqlite:///"):
            return True
        database = os.path.realpath(self.database_url.removeprefix("sqlite:///"))
        opened = 0
        for child in _children(pid):
            try:
                fds = os.listdir(f"/proc/{child}/fd")
                targets = {os.readlink(f"/proc/{child}/fd/{fd}") for fd in fds}
            except OSError:
                continue
            opened += database in targets
        return opened >= workers

    def kill(self, server: Server) -> None:
        """SIGKILL the server and every worker in its process group, as a crash would."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=STOP_TIMEOUT_S)
        if server in self.running:
            self.running.remove(server)
        if server.process.stdout is not None:
            server.process.stdout.close()

    def stop_all(self) -> None:
        for server in reversed(self.running):
            _stop(server.process)
        self.running.clear()


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S (and any worker left in its group)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    # Worker processes of `--workers N` live in the group this process leads.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.stdout is not None:
        process.stdout.close()


def run_verify(database_url: str) -> None:
    """`python -m revenipe verify`: must exit 0 (every ledger invariant holds)."""
    env = {**os.environ}
    env.pop("REVENIPE_DATABASE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "revenipe", "verify", "--database-url", database_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert completed.returncode == 0, (
        f"revenipe verify exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    )
    report = json.loads(completed.stdout)
    assert report["ok"] is True, report


def mint_token(server: Server, external_id: str, ttl_seconds: int | None = None) -> dict[str, Any]:
    """POST /v1/customers/{external_id}/tokens with the secret key (raw HTTP)."""
    body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
    with server.api() as api:
        response = api.post(f"/v1/customers/{external_id}/tokens", json=body)
    assert response.status_code == 201, response.text
    minted: dict[str, Any] = response.json()
    return minted
