"""Track under real concurrency: separate OS processes, each with its own `revenipe.open`.

Every test starts several worker processes (a small `python -c` program), waits until
each has opened the database and started its threads, then releases them all at once,
so that the tracks really overlap. docs/concepts/track.md#concurrency: concurrent tracks
never consume more than was granted and never refuse a track that fit; an idempotency
key is applied once; grants are drawn in the documented order.

These tests use the real clock (not the fixture `Clock`), because the workers do.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

import revenipe
from revenipe.storage import ledger as ledger_store
from revenipe.storage.schema import access_sources, customers, grants, ledger_entries

from support import DEMO_CATALOG, assert_verified

PROCESSES = 4
TRACKS_PER_PROCESS = 10
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 60.0

# No products at all: a customer holds exactly what the test grants.
CATALOG = """
entitlements:
  - id: credits_a
    name: Credits A
    type: metered
  - id: credits_b
    name: Credits B
    type: metered
  - id: credits_c
    name: Credits C
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [credits_a, credits_b, credits_c]
"""

# One worker process: open the database, start one thread per job (each waits on `go`),
# say "ready", wait for the parent's "go" line, run, print every answer as JSON.
WORKER = r"""
import json, os, sys, threading, time
import revenipe
from revenipe import RevenipeError
from revenipe.wire.usage import track_result_to_wire

spec = json.loads(sys.argv[1])
backend = revenipe.open(spec["url"])
app = backend.app(spec["app_id"])
results = [None] * len(spec["jobs"])
go = threading.Event()

def run(index, job):
    go.wait()
    started = time.monotonic()  # one clock for every process of the machine
    try:
        answer = app.track(
            job["customer"], job["id"], job["value"],
            idempotency_key=job.get("idempotency_key"),
        )
        results[index] = {
            **track_result_to_wire(answer),
            "usage_event_id": answer.usage_event_id,
            "customer_id": answer.customer_id,
            "replayed": answer.replayed,
        }
    except RevenipeError as exc:
        results[index] = {"exception": exc.code.value, "message": exc.message}
    except Exception as exc:
        results[index] = {"exception": type(exc).__name__, "message": repr(exc)}
    results[index]["timing"] = [os.getpid(), started, time.monotonic()]

threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(spec["jobs"])]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for thread in threads:
    thread.join()
backend.close()
print(json.dumps(results), flush=True)
"""


def run_concurrently(
    url: str, app_id: str, jobs_per_process: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Run each job list in its own process, all released together; every answer, flat."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps({"url": url, "app_id": app_id, "jobs": j})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for j in jobs_per_process
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            readable, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
            line = proc.stdout.readline() if readable else ""
            if line.strip() != "ready":
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"worker {proc.pid} did not get ready: {line!r}\n{err}")
        # The barrier: every worker is waiting on its stdin; release them all together.
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers: list[dict[str, Any]] = []
        for proc in procs:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
            assert proc.returncode == 0, f"worker {proc.pid} failed:\n{err}"
            answers.extend(json.loads(out.strip().splitlines()[-1]))
        assert_overlapped(answers)
        return answers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_overlapped(answers: list[dict[str, Any]]) -> None:
    """Some tracks of different processes ran at the same time (the test is real)."""
    spans = [answer.pop("timing") for answer in answers]
    assert any(
        pid_a != pid_b and start_a < end_b and start_b < end_a
        for pid_a, start_a, end_a in spans
        for pid_b, start_b, end_b in spans
    ), "no two processes' tracks overlapped in time"


def spread(jobs: list[dict[str, Any]], processes: int = PROCESSES) -> list[list[dict[str, Any]]]:
    return [jobs[i::processes] for i in range(processes)]


def tracks(customer: str, tracked_id: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"customer": customer, "id": tracked_id, "value": 1, **extra} for _ in range(count)]


@pytest.fixture
def real_backend(database_url: str) -> Iterator[revenipe.Backend]:
    """A backend on the real clock, like the worker processes."""
    with revenipe.open(database_url) as opened:
        yield opened


@pytest.fixture
def credits_app(real_backend: revenipe.Backend) -> revenipe.App:
    created = real_backend.create_app("concurrency", revenipe.load_catalog(CATALOG))
    return real_backend.app(created.app.id)


def unexpected(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in answers if "exception" in a]


def consumed_entries(backend: revenipe.Backend, app_id: str) -> list[ledger_store.LedgerEntryRow]:
    with backend.database.read() as conn:
        entries = ledger_store.list_ledger_entries(conn, app_id, limit=100_000)
    return [e for e in entries if e.kind == "consumed"]


def grant_balances(backend: revenipe.Backend, grant_ids: list[str]) -> dict[str, int]:
    with backend.database.read() as conn:
        rows = conn.execute(
            sql_select(grants.c.id, grants.c.balance).where(grants.c.id.in_(grant_ids))
        )
        return {r.id: int(r.balance) for r in rows}


def assert_exact_outcome(answers: list[dict[str, Any]], balance: int, tracked_id: str) -> None:
    """`balance` units, tracks of 1: exactly `balance` succeed, in a serial order."""
    assert unexpected(answers) == []
    successes = [a for a in answers if a["success"]]
    refusals = [a for a in answers if not a["success"]]
    assert len(successes) == balance
    assert len(refusals) == len(answers) - balance
    assert all(a["consumed"] == 1 and a["error"] is None for a in successes)
    assert all(a["entitlement_id"] == tracked_id for a in answers)
    # Serialized: each success saw a distinct balance, so the remainings are 0..balance-1.
    assert sorted(a["remaining"] for a in successes) == list(range(balance))
    assert {(a["error"], a["consumed"], a["remaining"]) for a in refusals} <= {
        ("insufficient_balance", 0, 0)
    }
    assert len({a["usage_event_id"] for a in answers}) == len(answers)


def test_forty_tracks_against_twenty_five_units(
    real_backend: revenipe.Backend, credits_app: revenipe.App, database_url: str
) -> None:
    app = credits_app
    granted = app.grant_entitlement("alice", "credits_a", amount=25)
    assert app.state("alice").usage_keys[0].remaining == 25

    jobs = tracks("alice", "credits_a", PROCESSES * TRACKS_PER_PROCESS)
    answers = run_concurrently(database_url, app.app_id, spread(jobs))

    assert len(answers) == 40
    assert_exact_outcome(answers, 25, "credits_a")
    assert len([a for a in answers if a["error"] == "insufficient_balance"]) == 15
    state = app.state("alice")
    assert [(e.entitlement_id, e.remaining) for e in state.entitlements] == [("credits_a", 0)]
    assert {k.key_id: k.remaining for k in state.usage_keys} == {"credits": 0}
    assert grant_balances(real_backend, list(granted.grant_ids)) == {granted.grant_ids[0]: 0}
    entries = consumed_entries(real_backend, app.app_id)
    assert [e.balance_after for e in entries] == list(range(24, -1, -1))
    assert_verified(real_backend, app.app_id)


def test_usage_key_fed_by_three_grants_drains_them_in_key_order(
    real_backend: revenipe.Backend, credits_app: revenipe.App, database_url: str
) -> None:
    app = credits_app
    # Granted in reverse of the key's order: the key's order must win over grant age.
    third = app.grant_entitlement("bob", "credits_c", amount=7).grant_ids[0]
    second = app.grant_entitlement("bob", "credits_b", amount=8).grant_ids[0]
    first = app.grant_entitlement("bob", "credits_a", amount=10).grant_ids[0]

    plan = app.check("bob", "credits", 25)
    assert plan.would_succeed and plan.available == 25 and plan.remaining_after == 0
    assert [(d.grant_id, d.entitlement_id, d.amount) for d in plan.draws] == [
        (first, "credits_a", 10),
        (second, "credits_b", 8),
        (third, "credits_c", 7),
    ]
    partial = app.check("bob", "credits", 12)
    assert [(d.grant_id, d.amount) for d in partial.draws] == [(first, 10), (second, 2)]
    too_much = app.check("bob", "credits", 26)
    assert not too_much.would_succeed and too_much.error == "insufficient_balance"
    assert too_much.draws == ()

    jobs = tracks("bob", "credits", PROCESSES * TRACKS_PER_PROCESS)
    answers = run_concurrently(database_url, app.app_id, spread(jobs))

    assert_exact_outcome(answers, 25, "credits")
    assert grant_balances(real_backend, [first, second, third]) == {
        first: 0,
        second: 0,
        third: 0,
    }
    entries = consumed_entries(real_backend, app.app_id)
    assert all(e.amount == -1 and e.balance_after >= 0 for e in entries)
    assert [e.grant_id for e in entries] == [first] * 10 + [second] * 8 + [third] * 7
    for grant_id, amount in ((first, 10), (second, 8), (third, 7)):
        assert [e.balance_after for e in entries if e.grant_id == grant_id] == list(
            range(amount - 1, -1, -1)
        )
    assert {k.key_id: k.remaining for k in app.state("bob").usage_keys} == {"credits": 0}
    assert_verified(real_backend, app.app_id)


def test_burn_order_is_observable_in_the_ledger_when_units_run_out(
    real_backend: revenipe.Backend, credits_app: revenipe.App, database_url: str
) -> None:
    """40 tracks, 20 units: each grant is empty before the next in burn order is touched.

    Within one entitlement: lower priority first, then soonest expiry, then the oldest.
    Across entitlements: the usage key's declared order. Grants are created in an order
    that contradicts each rule's tie-breakers, so only the documented order passes.
    """
    app = credits_app
    in_thirty_days = datetime.now(UTC) + timedelta(days=30)
    c_only = app.grant_entitlement("carol", "credits_c", amount=3).grant_ids[0]
    a_priority_1 = app.grant_entitlement("carol", "credits_a", amount=3, priority=1).grant_ids[0]
    a_never = app.grant_entitlement("carol", "credits_a", amount=3).grant_ids[0]
    b_older = app.grant_entitlement("carol", "credits_b", amount=4).grant_ids[0]
    a_expiring = app.grant_entitlement(
        "carol", "credits_a", amount=4, expires_at=in_thirty_days
    ).grant_ids[0]
    b_newer = app.grant_entitlement("carol", "credits_b", amount=3).grant_ids[0]
    order = [
        (a_expiring, 4),
        (a_never, 3),
        (a_priority_1, 3),
        (b_older, 4),
        (b_newer, 3),
        (c_only, 3),
    ]
    plan = app.check("carol", "credits", 20)
    assert [(d.grant_id, d.amount) for d in plan.draws] == order

    jobs = tracks("carol", "credits", PROCESSES * TRACKS_PER_PROCESS)
    answers = run_concurrently(database_url, app.app_id, spread(jobs))

    assert_exact_outcome(answers, 20, "credits")
    assert len([a for a in answers if a["error"] == "insufficient_balance"]) == 20
    entries = consumed_entries(real_backend, app.app_id)
    expected: list[str] = []
    for grant_id, amount in order:
        expected += [grant_id] * amount
    assert [e.grant_id for e in entries] == expected
    # Spelled out: the first entry on each grant comes after the previous grant hit 0.
    for (previous, _), (following, _) in itertools.pairwise(order):
        emptied_at = next(e.id for e in entries if e.grant_id == previous and e.balance_after == 0)
        first_touch = min(e.id for e in entries if e.grant_id == following)
        assert first_touch > emptied_at
    assert set(grant_balances(real_backend, [g for g, _ in order]).values()) == {0}
    assert_verified(real_backend, app.app_id)


def test_same_idempotency_key_from_many_processes_is_applied_once(
    real_backend: revenipe.Backend, credits_app: revenipe.App, database_url: str
) -> None:
    app = credits_app
    app.grant_entitlement("dave", "credits_a", amount=25)
    jobs = [
        {"customer": "dave", "id": "credits", "value": 3, "idempotency_key": "order-42"}
        for _ in range(PROCESSES * 5)
    ]
    answers = run_concurrently(database_url, app.app_id, spread(jobs))

    assert unexpected(answers) == []
    assert Counter(a["replayed"] for a in answers) == {False: 1, True: len(jobs) - 1}
    bodies = {json.dumps({k: v for k, v in a.items() if k != "replayed"}) for a in answers}
    assert len(bodies) == 1, bodies
    (answer,) = (json.loads(b) for b in bodies)
    assert answer["success"] is True
    assert (answer["requested"], answer["consumed"], answer["remaining"]) == (3, 3, 22)
    assert {k.key_id: k.remaining for k in app.state("dave").usage_keys} == {"credits": 22}
    entries = consumed_entries(real_backend, app.app_id)
    assert [(e.amount, e.usage_event_id) for e in entries] == [(-3, answer["usage_event_id"])]
    assert_verified(real_backend, app.app_id)


def test_first_tracks_of_a_new_customer_create_it_once(
    real_backend: revenipe.Backend, database_url: str
) -> None:
    """A customer named for the first time by many concurrent tracks: one row, one
    set of default grants (the demo catalog's free tier: 100 monthly credits)."""
    created = real_backend.create_app("new customers", revenipe.load_catalog(DEMO_CATALOG))
    app = real_backend.app(created.app.id)
    jobs = tracks("newcomer", "credits", PROCESSES * TRACKS_PER_PROCESS)
    answers = run_concurrently(database_url, app.app_id, spread(jobs))

    assert unexpected(answers) == []
    assert all(a["success"] for a in answers)
    assert sorted(a["remaining"] for a in answers) == list(range(60, 100))
    assert len({a["customer_id"] for a in answers}) == 1
    with real_backend.database.read() as conn:
        customer_rows = conn.execute(
            sql_select(customers.c.id).where(customers.c.app_id == app.app_id)
        ).all()
        sources = conn.execute(
            sql_select(access_sources.c.product_id, access_sources.c.kind).where(
                access_sources.c.app_id == app.app_id
            )
        ).all()
        grant_rows = conn.execute(
            sql_select(grants.c.entitlement_id, grants.c.balance).where(
                grants.c.app_id == app.app_id
            )
        ).all()
        granted_entries = conn.execute(
            sql_select(func.count()).where(
                ledger_entries.c.app_id == app.app_id, ledger_entries.c.kind == "granted"
            )
        ).scalar_one()
    assert [r.id for r in customer_rows] == [answers[0]["customer_id"]]
    assert [(s.product_id, s.kind) for s in sources] == [("free", "default")]
    assert sorted((g.entitlement_id, g.balance) for g in grant_rows) == [
        ("export_hd", 0),
        ("monthly_credits", 60),
    ]
    assert granted_entries == 1
    state = app.state("newcomer")
    assert {k.key_id: k.remaining for k in state.usage_keys} == {"credits": 60}
    assert_verified(real_backend, app.app_id)
