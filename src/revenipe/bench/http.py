"""HTTP: `revenipe serve` (1 and 2 workers) under a load generator, tracks through the
server API against the same server's no-op endpoint (`GET /v1/health`), and tracks at
64 connections for the tail, all in alternating runs of one bench run.

The generator is `wrk` (one thread) when installed; its ceiling is measured first, at
every connection count used, against a trivial asyncio responder
(`revenipe.bench.responder`). Without `wrk` a Python generator stands in (asyncio over
raw sockets, two processes), labeled as such.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from revenipe.bench import loadgen, workload
from revenipe.bench.plan import HTTP_TAIL_CONNECTIONS, Plan
from revenipe.bench.stats import Measurement, combine, machine_cpu_seconds, summarize
from revenipe.engine.errors import InvariantViolation

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
WARMUP_REQUESTS = 10
PYTHON_GENERATOR_PROCESSES = 2
INSTALL_HINT = "install wrk (`apt-get install -y wrk`, or `bash scripts/bench`, which does)"

_DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"mean_us": %.1f, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect + e.read + e.write + e.status + e.timeout))
end
"""

_TRACK_LUA = """
local customers = {%(customers)s}
local secret = "%(secret)s"
local prefix = "%(prefix)s"
local body = '%(body)s'
local counter = 0
local next_thread = 0

setup = function(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

request = function()
  counter = counter + 1
  local customer = customers[(counter %% #customers) + 1]
  return wrk.format("POST", "/v1/customers/" .. customer .. "/track", {
    ["Authorization"] = "Bearer " .. secret,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter,
  }, body)
end
"""


@dataclass
class HttpSetup:
    """The load generator chosen for this run, and its ceiling at each connection count."""

    generator: str
    """"wrk" or "python"."""
    description: str
    connections: int
    """Connections of the track and no-op runs (the tail run uses HTTP_TAIL_CONNECTIONS)."""
    duration_s: int
    rounds: int
    ceilings: dict[int, tuple[Measurement, float]] = field(default_factory=dict)
    """Connections -> the generator's figures against the trivial responder, and the
    CPU it used (% of one core)."""
    note: str | None = None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="revenipe_wrk_")))

    @property
    def ceiling(self) -> Measurement | None:
        found = self.ceilings.get(self.connections)
        return found[0] if found else None

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def to_json(self) -> dict[str, Any]:
        main = self.ceilings.get(self.connections)
        return {
            "generator": self.generator,
            "description": self.description,
            "connections": self.connections,
            "tail_connections": HTTP_TAIL_CONNECTIONS,
            "duration_s": self.duration_s,
            "rounds": self.rounds,
            "ceiling": main[0].to_json() if main else None,
            "ceiling_generator_cpu_pct": main[1] if main else None,
            "ceilings": {
                str(connections): {**measured.to_json(), "generator_cpu_pct": cpu}
                for connections, (measured, cpu) in sorted(self.ceilings.items())
            },
            "note": self.note,
        }


def _wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk\s+(\S+)", probe.stdout + probe.stderr)
    return match.group(1) if match else "unknown version"


def prepare(plan: Plan, choice: str, say: Callable[[str], None]) -> HttpSetup:
    """Pick the generator (`auto`, `wrk` or `python`) and measure its ceiling."""
    version = _wrk_version() if choice in ("auto", "wrk") else None
    if choice == "wrk" and version is None:
        raise SystemExit(f"--generator wrk: wrk is not installed; {INSTALL_HINT}")
    if version is not None:
        setup = HttpSetup(
            "wrk",
            f"wrk {version}, 1 thread, {plan.http_connections} connections "
            f"({HTTP_TAIL_CONNECTIONS} for the tail)",
            plan.http_connections,
            plan.http_duration_s,
            plan.http_rounds,
        )
    else:
        note = None
        if choice == "auto":
            note = f"wrk not found: Python fallback generator used; {INSTALL_HINT}"
            say(f"WARNING: {note}")
        setup = HttpSetup(
            "python",
            f"Python asyncio raw-socket generator (FALLBACK), {PYTHON_GENERATOR_PROCESSES} "
            f"processes, {plan.http_connections} connections "
            f"({HTTP_TAIL_CONNECTIONS} for the tail)",
            plan.http_connections,
            plan.http_duration_s,
            plan.http_rounds,
            note=note,
        )
    say(f"http: measuring the load generator's ceiling ({setup.generator} vs a trivial responder)")
    port = _free_port()
    responder = subprocess.Popen(
        [sys.executable, "-m", "revenipe.bench.responder", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if responder.stdout is None:
            raise InvariantViolation("Popen(stdout=PIPE) gave no stdout")
        if responder.stdout.readline().strip() != "ready":
            raise RuntimeError("the bench's trivial responder did not start")
        for connections in sorted({setup.connections, HTTP_TAIL_CONNECTIONS}):
            label = f"generator ceiling (trivial responder), {connections} connections"
            ceiling, cpu = _load(setup, port, label, None, connections)
            setup.ceilings[connections] = (ceiling, round(100 * cpu / ceiling.seconds))
    finally:
        responder.terminate()
        responder.wait(timeout=STOP_TIMEOUT_S)
    return setup


@dataclass(frozen=True)
class _Track:
    secret_key: str
    customers: list[str]


def _load(
    setup: HttpSetup, port: int, label: str, track: _Track | None, connections: int
) -> tuple[Measurement, float]:
    """One load run against 127.0.0.1:port: tracks if `track` is given, else `GET /v1/health`
    (the path is ignored by the trivial responder). Also the generator's CPU seconds."""
    if setup.generator == "wrk":
        # wrk runs for the measured window only: its whole CPU time counts.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        measured = _wrk(setup, port, label, track, connections)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    else:
        measured, cpu = _python_generator(setup, port, label, track, connections)
    return measured, cpu


def _python_generator(
    setup: HttpSetup, port: int, label: str, track: _Track | None, connections: int
) -> tuple[Measurement, float]:
    if track is None:
        target = loadgen.Target(port=port, method="GET", path="/v1/health")
    else:
        target = loadgen.Target(
            port=port,
            method="POST",
            path="/v1/customers/{customer}/track",
            headers=(
                ("Authorization", f"Bearer {track.secret_key}"),
                ("Content-Type", "application/json"),
            ),
            body=_track_body().encode(),
            customers=tuple(track.customers),
            key_prefix=f"load-{secrets.token_hex(4)}",
        )
    result = loadgen.generate(
        target,
        processes=PYTHON_GENERATOR_PROCESSES,
        connections=connections,
        seconds=setup.duration_s,
    )
    measured = summarize(
        label,
        result.latencies,
        result.seconds,
        callers=connections,
        errors=result.errors,
        note="Python fallback generator: a lower bound",
    )
    return measured, result.cpu_seconds


def _track_body() -> str:
    return json.dumps({"id": workload.TRACKED_ID, "value": workload.TRACK_VALUE})


def _wrk(
    setup: HttpSetup, port: int, label: str, track: _Track | None, connections: int
) -> Measurement:
    script = setup.folder / f"{secrets.token_hex(4)}.lua"
    path = "/v1/health"
    lua = _DONE_LUA
    if track is not None:
        lua = (
            _TRACK_LUA
            % {
                "customers": ", ".join(f'"{c}"' for c in track.customers),
                "secret": track.secret_key,
                "prefix": f"load-{secrets.token_hex(4)}",
                "body": _track_body(),
            }
            + lua
        )
        path = "/"
    script.write_text(lua)
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{setup.duration_s}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in completed.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed:\n{completed.stdout}\n{completed.stderr}")
    figures = json.loads(line[len("WRK_JSON ") :])
    return Measurement(
        label=label,
        callers=connections,
        calls=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        mean_ms=figures["mean_us"] / 1000,
        errors=int(figures["errors"]),
    )


# --- the server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `revenipe serve` process (and its workers)."""

    process: subprocess.Popen[str]
    port: int
    workers: int
    output: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The supervisor and its worker processes."""
        found = [self.process.pid]
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                found += [int(pid) for pid in f.read().split()]
        except OSError:
            pass
        return found

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (Linux /proc; 0 elsewhere)."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def launch_server(url: str, workers: int) -> Server:
    """Start `revenipe serve` on a free port; `wait_healthy` waits until it answers."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "revenipe",
            "serve",
            "--database-url",
            url,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    if process.stdout is None:
        raise InvariantViolation("Popen(stdout=PIPE) gave no stdout")
    stream = process.stdout
    threading.Thread(target=lambda: output.extend(stream), daemon=True).start()
    return Server(process, port, workers, output)


def wait_healthy(server: Server) -> None:
    process, output = server.process, server.output
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, timeout=2.0) as probe:
        while True:
            if process.poll() is not None:
                raise RuntimeError("revenipe serve exited:\n" + "".join(output))
            try:
                if probe.get("/v1/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("revenipe serve did not answer in time:\n" + "".join(output))
            time.sleep(0.05)


def _warm_up(server: Server, track: _Track) -> None:
    """A few tracks and health checks on fresh connections, so every worker has served
    some (imports, statement caches, connection pool) before the clock runs."""
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {track.secret_key}"}
    tag = secrets.token_hex(4)
    with httpx.Client(base_url=server.base_url, limits=limits, timeout=30.0) as client:
        for n in range(WARMUP_REQUESTS):
            customer = track.customers[n % len(track.customers)]
            answer = client.post(
                f"/v1/customers/{customer}/track",
                content=_track_body(),
                headers={
                    **headers,
                    "Idempotency-Key": f"warm-{tag}-{n}",
                    "Content-Type": "application/json",
                },
            )
            if answer.status_code != 200 or not answer.json().get("success"):
                raise RuntimeError(f"warm-up track failed: {answer.status_code} {answer.text}")
            client.get("/v1/health").raise_for_status()


@dataclass(frozen=True)
class _Run:
    """One HTTP scenario: which server, what load, how many connections."""

    workers: int
    name: str
    label: str
    track: _Track | None
    connections: int


def bench_http(
    setup: HttpSetup,
    kind: str,
    url: str,
    secret_key: str,
    customers: list[str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Tracks and no-ops through `revenipe serve` with 1 and 2 workers, and tracks at 64
    connections with 1 worker. Both servers run side by side (the one not loaded is
    idle) and the runs alternate over them, `setup.rounds` rounds, so that a noisy
    moment of the machine hits every run alike."""
    track = _Track(secret_key, customers)
    tail = HTTP_TAIL_CONNECTIONS
    runs = [
        _Run(1, "track", "POST track, 1 worker(s)", track, setup.connections),
        _Run(1, "noop", "GET /v1/health, 1 worker(s)", None, setup.connections),
        _Run(2, "track", "POST track, 2 worker(s)", track, setup.connections),
        _Run(2, "noop", "GET /v1/health, 2 worker(s)", None, setup.connections),
        _Run(1, f"track_{tail}", f"POST track, 1 worker(s), {tail} connections", track, tail),
    ]
    measured: list[list[Measurement]] = [[] for _ in runs]
    server_cpu = [0.0 for _ in runs]
    generator_cpu = [0.0 for _ in runs]
    machine_cpu = [0.0 for _ in runs]
    servers: dict[int, Server] = {}
    try:
        say(f"{kind}: http: starting revenipe serve --workers 1 and --workers 2")
        for workers in (1, 2):
            servers[workers] = launch_server(url, workers)
        for server in servers.values():
            wait_healthy(server)
            _warm_up(server, track)
        which = ", ".join(f"{run.name} ({run.workers} worker(s))" for run in runs)
        say(f"{kind}: http: {which}: {setup.rounds} alternating round(s)")
        for _ in range(setup.rounds):
            for i, run in enumerate(runs):
                server = servers[run.workers]
                before, machine_before = server.cpu_seconds(), machine_cpu_seconds()
                figures, cpu = _load(setup, server.port, run.label, run.track, run.connections)
                measured[i].append(figures)
                server_cpu[i] += server.cpu_seconds() - before
                machine_cpu[i] += machine_cpu_seconds() - machine_before
                generator_cpu[i] += cpu
    finally:
        for server in servers.values():
            server.stop()
    results: dict[str, dict[str, Any]] = {"workers_1": {}, "workers_2": {}}
    for i, run in enumerate(runs):
        combined = combine(measured[i])
        results[f"workers_{run.workers}"][run.name] = {
            **combined.to_json(),
            "server_cpu_pct": round(100 * server_cpu[i] / combined.seconds),
            "generator_cpu_pct": round(100 * generator_cpu[i] / combined.seconds),
            "machine_cpu_pct": round(100 * machine_cpu[i] / combined.seconds),
        }
    return results
