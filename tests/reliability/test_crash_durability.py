"""Crash durability: SIGKILL the server at random moments under load; nothing acknowledged
is lost, nothing is charged twice.

docs/concepts/track.md#durability: once a success is answered, it survives a killed
server process; and retry-safe with an idempotency key (docs/concepts/idempotency.md).
Twelve client threads track over both surfaces, each track under its own idempotency
key, retried with the same key until an answer comes (a 5xx or a broken connection tells
nothing: the server may have committed before it died). Meanwhile the server is killed
with SIGKILL (the whole process group; on PostgreSQL with two workers, sometimes one
worker only) at a random moment, started again on the same port and database, and again.
Afterwards every track answered `success: true` is one usage event, charged once, in
ledger entries; nothing unanswered or unsent was charged; balances equal the ledger, and
`revenipe verify` passes.

CI kills 20 times per database (REVENIPE_RELIABILITY_KILLS for more).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from e2e.harness import Server, Servers, _children, run_verify
from reliability.conftest import size
from reliability.faults import wait_for
from reliability.workload import NO_FLOOD_LIMITS, Load, assert_ledger_matches, open_accounts

KILLS = size("KILLS", 20)


def _wait_for_progress(load: Load) -> None:
    before = load.acknowledged_count()
    wait_for(lambda: load.acknowledged_count() > before + 2, 120, "tracks flow again")


def _workers(server: Server) -> list[int]:
    """The worker processes (multiprocessing also runs a resource tracker child)."""
    found = []
    for child in _children(server.process.pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            found.append(child)
    return found


def _kill_one_worker(server: Server, rng: random.Random) -> None:
    """SIGKILL one worker process; uvicorn's supervisor starts a new one."""
    before = _workers(server)
    assert before, f"no worker processes: {server.describe()}"
    victim = rng.choice(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in _workers(server) and len(_workers(server)) == len(before),
        60,
        "uvicorn replaced the killed worker",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("e2e_database", "workers"), [("sqlite", 1), ("postgresql", 2)], indirect=["e2e_database"]
)
def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    servers: Servers, e2e_database: str, workers: int, figures: object
) -> None:
    seed = int(os.environ.get("REVENIPE_RELIABILITY_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    servers.env.update(NO_FLOOD_LIMITS)
    # Restarts under twelve busy clients (and a busy CI machine) may be slow: not a fault.
    servers.start_timeout_s = 120
    server = servers.start(workers=workers)
    accounts = open_accounts(server, 6, 10**9, "crash")
    # One customer with little: refusals (insufficient_balance) must survive kills too.
    accounts += open_accounts(server, 1, 30, "poor")
    load = Load(server, accounts, threads=12, seed=seed, deadline_s=300).start()
    whole, single = 0, 0
    restart_s: list[float] = []
    timeline: list[str] = []
    generations = [server]
    try:
        for _ in range(KILLS):
            # Kill only once tracks flow again (so that every kill lands under load and a
            # slow restart cannot starve a client between two kills), at a random moment.
            _wait_for_progress(load)
            time.sleep(rng.uniform(0.1, 0.8))
            if workers > 1 and rng.random() < 0.25:
                timeline.append(f"{time.monotonic():.1f} kill one worker")
                _kill_one_worker(server, rng)
                single += 1
                continue
            timeline.append(f"{time.monotonic():.1f} kill the server")
            servers.kill(server)
            whole += 1
            time.sleep(rng.uniform(0.0, 0.2))
            started = time.monotonic()
            server = servers.start(workers=workers, reuse=server, port=server.port)
            generations.append(server)
            restart_s.append(time.monotonic() - started)
            timeline.append(f"{time.monotonic():.1f} healthy again")
        time.sleep(0.5)
    finally:
        timeline.append(f"{time.monotonic():.1f} stopping the load")
        load.stop()
    try:
        result = assert_ledger_matches(e2e_database, load)
    except AssertionError as exc:
        outputs = "\n".join(s.describe() for s in generations[-3:])
        raise AssertionError(f"{exc}\ntimeline: {timeline}\n{outputs}") from None
    assert result.acknowledged >= KILLS, f"too little progress: {result}"
    assert result.retried > 0, "no kill ever hit a track in flight: the test proved nothing"
    servers.stop_all()
    run_verify(e2e_database)
    assert callable(figures)
    figures(
        seed=seed,
        workers=workers,
        kills=whole + single,
        whole_server_kills=whole,
        single_worker_kills=single,
        tracks=result.tracks,
        acknowledged_found_once=result.acknowledged,
        refused=result.refused,
        tracks_retried=result.retried,
        attempts=result.attempts,
        restart_mean_s=round(sum(restart_s) / max(1, len(restart_s)), 2),
        unanswered_attempts=dict(result.unanswered_by_kind.most_common(6)),
    )
