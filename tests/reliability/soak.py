"""Soak: a real server under a mixed workload for a chosen time, with figures over time.

    bash scripts/soak --minutes 30 [--database sqlite|postgresql] [--workers N] [--json F]

Starts `revenipe serve` on a fresh database (a SQLite file, or a database created on the
test PostgreSQL and dropped afterwards), opens customers, then runs client threads that
mix what apps do: tracks over the client protocol and the server API (each with an
idempotency key, some replayed), refreshes, logins with a token, checks, reversals,
signups and product lists. Every interval it prints throughput, p50 and p99 latency
(all requests, and tracks alone), errors and the server's memory (RSS of every server
process). At the end `revenipe verify` must pass, and the verdict fails (exit 1) on any
error, on memory growing more than 25 % from the first interval to the last, or on
throughput or p99 drifting by more than half from the first interval to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from e2e.harness import E2E_CATALOG, Server, Servers, _children, run_verify
from reliability.workload import (
    NO_FLOOD_LIMITS,
    TRACKED_IDS,
    Account,
    Outcome,
    Tracker,
    open_accounts,
)

POSTGRES_URL = os.environ.get(
    "REVENIPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# What each client thread does, by weight (the rest of an app's day in miniature).
MIX = {
    "track_protocol": 34,
    "track_api": 24,
    "replay": 4,
    "refresh": 14,
    "check": 8,
    "login": 6,
    "reverse": 4,
    "signup": 3,
    "products": 3,
}


@dataclass
class Interval:
    """What happened between two samples."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = Interval()

    def record(self, op: str, seconds: float, error: str | None) -> None:
        with self._lock:
            self.current.add(op, seconds)
            if error is not None:
                self.current.errors[f"{op}: {error}"] += 1

    def take(self) -> Interval:
        with self._lock:
            done, self.current = self.current, Interval()
        return done


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _rss_kib(pid: int) -> int:
    total = 0
    for process in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{process}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class Client:
    """One load thread: a tracker for both surfaces plus the other calls apps make."""

    def __init__(self, server: Server, accounts: list[Account], seed: int, rec: Recorder):
        self.server = server
        self.accounts = accounts
        self.rng = random.Random(seed)
        self.rec = rec
        self.tracker = Tracker(server, timeout_s=30)
        self.answered: list[Outcome] = []
        self.events: list[str] = []

    def step(self) -> None:
        op = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        started = time.perf_counter()
        try:
            error = getattr(self, op)()
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self.rec.record(op, time.perf_counter() - started, error)

    @staticmethod
    def _status(response: httpx.Response, *expected: int) -> str | None:
        return None if response.status_code in expected else f"{response.status_code}"

    def _track(self, surface: str) -> str | None:
        outcome = Outcome(
            f"soak-{uuid.uuid4().hex}",
            self.rng.choice(self.accounts),
            self.rng.choice(TRACKED_IDS),
            self.rng.randint(1, 3),
            surface,
        )
        response = self.tracker.send(outcome)
        if response.status_code != 200:
            return f"{response.status_code}"
        outcome.status, outcome.body = 200, response.json()
        if len(self.answered) < 1000:
            self.answered.append(outcome)
        else:
            self.answered[self.rng.randrange(1000)] = outcome
        return None

    def track_protocol(self) -> str | None:
        return self._track("protocol")

    def track_api(self) -> str | None:
        return self._track("api")

    def replay(self) -> str | None:
        if not self.answered:
            return self.track_api()
        first = self.rng.choice(self.answered)
        response = self.tracker.send(first)
        if response.status_code != 200 or response.json() != first.body:
            return f"replay differs ({response.status_code})"
        return None

    def _as_customer(self, path: str, login: bool) -> str | None:
        account = self.rng.choice(self.accounts)
        response = self.tracker.protocol.post(
            path,
            json={"client_id": account.external_id if login else account.client_id},
            headers={"X-Revenipe-Customer-Token": account.token},
        )
        return self._status(response, 200)

    def refresh(self) -> str | None:
        return self._as_customer("/v1/customer/refresh_entitlements", login=False)

    def login(self) -> str | None:
        return self._as_customer("/v1/client/auth", login=True)

    def check(self) -> str | None:
        account = self.rng.choice(self.accounts)
        response = self.tracker.api.post(
            f"/v1/customers/{account.external_id}/check", json={"id": "credits", "value": 2}
        )
        return self._status(response, 200)

    def reverse(self) -> str | None:
        account = self.rng.choice(self.accounts)
        tracked = self.tracker.api.post(
            f"/v1/customers/{account.external_id}/track",
            json={"id": "purchased_credits", "value": 2},
            headers={"Idempotency-Key": f"soak-{uuid.uuid4().hex}"},
        )
        if tracked.status_code != 200 or not tracked.json()["success"]:
            return f"track before reversal: {tracked.status_code}"
        event = tracked.json()["usage_event_id"]
        response = self.tracker.api.post(f"/v1/usage_events/{event}/reversals", json={})
        return self._status(response, 201)

    def signup(self) -> str | None:
        # A new customer buys a pack. (Not more grants for the same customers: every
        # grant a customer ever held is read by each of its tracks, so piling grants on
        # 40 customers makes every track slower, which is not what a soak is after.)
        response = self.tracker.api.post(
            f"/v1/customers/soak-new-{uuid.uuid4().hex}/grants", json={"product_id": "pack_50"}
        )
        return self._status(response, 201)

    def products(self) -> str | None:
        return self._status(self.tracker.protocol.get("/v1/customer/app/products"), 200)


def soak(
    database_url: str, minutes: float, workers: int, threads: int, interval_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="revenipe-soak-") as scratch:
        catalog = Path(scratch) / "catalog.yaml"
        catalog.write_text(E2E_CATALOG)
        servers = Servers(database_url, catalog)
        servers.env.update(NO_FLOOD_LIMITS)
        servers.start_timeout_s = 120
        try:
            server = servers.start(workers=workers)
            accounts = open_accounts(server, 40, 10**12, "soak")
            return _drive(server, accounts, minutes, threads, interval_s)
        finally:
            servers.stop_all()
            run_verify(database_url)


def _drive(
    server: Server, accounts: list[Account], minutes: float, threads: int, interval_s: float
) -> dict[str, Any]:
    rec = Recorder()
    stop = threading.Event()

    def run(index: int) -> None:
        client = Client(server, accounts, index, rec)
        try:
            while not stop.is_set():
                client.step()
        finally:
            client.tracker.close()

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    samples = []
    started = time.monotonic()
    end = started + minutes * 60
    print(
        f"{'t_min':>6} {'req/s':>8} {'p50_ms':>7} {'p99_ms':>7} {'track/s':>8} "
        f"{'trk_p50':>7} {'trk_p99':>7} {'errors':>6} {'rss_MiB':>8} {'load1':>5}",
        flush=True,
    )
    try:
        while time.monotonic() < end:
            time.sleep(max(0.0, min(interval_s, end - time.monotonic())))
            interval = rec.take()
            elapsed = time.monotonic() - started
            length = elapsed - (samples[-1]["t_s"] if samples else 0.0)
            every = [v for values in interval.latencies.values() for v in values]
            tracks = [v for op, vs in interval.latencies.items() if "track" in op for v in vs]
            sample = {
                "t_s": round(elapsed, 1),
                "requests_per_s": round(len(every) / length, 1),
                "p50_ms": round(_percentile(every, 0.5) * 1000, 2),
                "p99_ms": round(_percentile(every, 0.99) * 1000, 2),
                "tracks_per_s": round(len(tracks) / length, 1),
                "track_p50_ms": round(_percentile(tracks, 0.5) * 1000, 2),
                "track_p99_ms": round(_percentile(tracks, 0.99) * 1000, 2),
                "errors": sum(interval.errors.values()),
                "error_kinds": dict(interval.errors.most_common(5)),
                "p99_ms_by_op": {
                    op: round(_percentile(vs, 0.99) * 1000, 1)
                    for op, vs in sorted(interval.latencies.items())
                },
                "rss_mib": round(_rss_kib(server.process.pid) / 1024, 1),
                "load1": os.getloadavg()[0],
            }
            samples.append(sample)
            print(
                f"{elapsed / 60:6.1f} {sample['requests_per_s']:8.1f} {sample['p50_ms']:7.2f} "
                f"{sample['p99_ms']:7.2f} {sample['tracks_per_s']:8.1f} "
                f"{sample['track_p50_ms']:7.2f} {sample['track_p99_ms']:7.2f} "
                f"{sample['errors']:6d} {sample['rss_mib']:8.1f} {sample['load1']:5.1f}"
                + (f"  {sample['error_kinds']}" if sample["errors"] else ""),
                flush=True,
            )
    finally:
        stop.set()
        for thread in pool:
            thread.join(timeout=60)
    return {"samples": samples}


def verdict(samples: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a run: errors, memory growth, drift (empty when all is well)."""
    problems = []
    errors = sum(s["errors"] for s in samples)
    if errors:
        problems.append(f"{errors} error(s)")
    if len(samples) < 3:
        return [*problems, "too short for a verdict on drift (fewer than 3 intervals)"]
    # The first interval warms caches and pools up: compare the second with the last.
    first, last = samples[1], samples[-1]
    if last["rss_mib"] > first["rss_mib"] * 1.25:
        problems.append(f"memory grew from {first['rss_mib']} MiB to {last['rss_mib']} MiB")
    if last["requests_per_s"] < first["requests_per_s"] * 0.5:
        problems.append(
            f"throughput fell from {first['requests_per_s']} to {last['requests_per_s']} req/s"
        )
    if last["p99_ms"] > max(first["p99_ms"] * 2, first["p99_ms"] + 20):
        problems.append(f"p99 rose from {first['p99_ms']} ms to {last['p99_ms']} ms")
    if problems and abs(last["load1"] - first["load1"]) > 1.0:
        # Said, not excused: on a shared machine the neighbours' load moves the figures.
        problems.append(
            f"(the machine's load average went from {first['load1']:.1f} to {last['load1']:.1f})"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--interval", type=float, default=None, help="seconds per sample")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    interval = args.interval or max(5.0, min(60.0, args.minutes * 60 / 10))
    admin = None
    if args.database == "sqlite":
        scratch = tempfile.mkdtemp(prefix="revenipe-soak-db-")
        database_url = f"sqlite:///{scratch}/soak.db"
    else:
        name = f"revenipe_soak_{uuid.uuid4().hex[:12]}"
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
        admin.execute(f'CREATE DATABASE "{name}"')
        database_url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    print(
        f"soak: {args.minutes} min on {args.database}, {args.workers} worker(s), "
        f"{args.threads} client threads, a sample every {interval:.0f} s",
        flush=True,
    )
    try:
        result = soak(database_url, args.minutes, args.workers, args.threads, interval)
    finally:
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    samples = result["samples"]
    total = sum(s["requests_per_s"] * (s["t_s"] - p) for s, p in _with_previous_t(samples))
    tracks = sum(s["tracks_per_s"] * (s["t_s"] - p) for s, p in _with_previous_t(samples))
    problems = verdict(samples)
    summary = {
        "minutes": args.minutes,
        "database": args.database,
        "workers": args.workers,
        "requests": round(total),
        "tracks": round(tracks),
        "requests_per_s_mean": round(statistics.mean(s["requests_per_s"] for s in samples), 1),
        "rss_mib_start": samples[0]["rss_mib"] if samples else None,
        "rss_mib_end": samples[-1]["rss_mib"] if samples else None,
        "errors": sum(s["errors"] for s in samples),
        "verify": "ok",
        "problems": problems,
    }
    print("summary: " + json.dumps(summary), flush=True)
    if args.json:
        args.json.write_text(json.dumps({**summary, "samples": samples}, indent=2) + "\n")
    print("verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)), flush=True)
    return 1 if problems else 0


def _with_previous_t(samples: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    previous = [0.0] + [s["t_s"] for s in samples[:-1]]
    return list(zip(samples, previous, strict=True))


if __name__ == "__main__":
    sys.exit(main())
