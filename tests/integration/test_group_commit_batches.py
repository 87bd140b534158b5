"""Group commit on real databases: tracks that share one transaction each get the answer
they would have had alone, whatever their neighbours do (docs/adr/0015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, text

import revenipe
from revenipe import ErrorCode

from support import DEMO_CATALOG, Outcome, assert_verified, outcome, run_in_one_batch


def _calls(app: revenipe.App) -> list[Callable[[], Any]]:
    """Five tracks of one customer (who holds 100 monthly credits) and one write that
    fails on its statement, in the order they are handed in."""

    def broken_write() -> Any:
        def job(conn: Connection) -> None:
            conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

        return app.context.db.write_grouped(job, key=(app.app_id, None, "alice"))

    return [
        lambda: app.track("alice", "credits", 30, idempotency_key="k1"),
        lambda: app.track("alice", "credits", 31, idempotency_key="k1"),  # key reused: error
        lambda: app.track("alice", "credits", 500),  # more than held: a refusal
        broken_write,
        lambda: app.track("alice", "credits", 30, idempotency_key="k1"),  # a replay
        lambda: app.track("alice", "credits", 70),  # exactly what is left
    ]


def _alone(backend: revenipe.Backend) -> list[Outcome]:
    app = backend.app(backend.create_app("alone", revenipe.load_catalog(DEMO_CATALOG)).app.id)
    app.login("alice")  # the customer exists, with the free plan's 100 credits
    return [outcome(call) for call in _calls(app)]


def test_a_batch_answers_each_track_as_if_it_ran_alone(
    backend: revenipe.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _alone(backend)
    assert [kind for kind, _ in expected] == [
        "answer",
        "error",
        "answer",
        "failure",
        "answer",
        "answer",
    ]
    assert expected[1] == ("error", ErrorCode.IDEMPOTENCY_KEY_REUSED)
    assert expected[5] == ("answer", (True, 70, 0, None))

    app = backend.app(backend.create_app("batched", revenipe.load_catalog(DEMO_CATALOG)).app.id)
    app.login("alice")  # the customer exists, with the free plan's 100 credits
    outcomes, batches = run_in_one_batch(
        monkeypatch,
        backend.database,
        [lambda call=call: outcome(call) for call in _calls(app)],
        hold_key=(app.app_id, None, "alice"),
    )
    assert batches == [1, 6], "the six calls were not decided in one shared transaction"
    assert outcomes == expected
    assert_verified(backend, app.app_id)
