"""How many group-commit transactions a process runs at once on PostgreSQL: 2, or 1 in
each worker when `revenipe serve` starts several (their lanes add up; docs/adr/0015),
or what `REVENIPE_POSTGRES_WRITE_LANES` says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from revenipe.cli.main import main
from revenipe.server.settings import ServerSettings
from revenipe.storage.database import POSTGRES_WRITE_LANES, open_database


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment as `serve` leaves it for its workers (a copy, put back)."""
    env = {k: v for k, v in os.environ.items() if k != "REVENIPE_POSTGRES_WRITE_LANES"}
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    return env


def _serve(tmp_path: Path, workers: int) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    main(["serve", "--database-url", url, "--workers", str(workers)])


def test_serve_with_one_worker_leaves_the_default(
    environment: dict[str, str], tmp_path: Path
) -> None:
    _serve(tmp_path, 1)
    assert ServerSettings.from_env().postgres_write_lanes is None


def test_serve_with_several_workers_gives_each_one_lane(
    environment: dict[str, str], tmp_path: Path
) -> None:
    _serve(tmp_path, 2)
    assert ServerSettings.from_env().postgres_write_lanes == 1


def test_the_environment_says_otherwise(environment: dict[str, str], tmp_path: Path) -> None:
    environment["REVENIPE_POSTGRES_WRITE_LANES"] = "3"
    _serve(tmp_path, 2)
    assert ServerSettings.from_env().postgres_write_lanes == 3


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_lanes_out_of_range_are_refused(environment: dict[str, str], value: str) -> None:
    environment["REVENIPE_POSTGRES_WRITE_LANES"] = value
    with pytest.raises(SystemExit, match="REVENIPE_POSTGRES_WRITE_LANES"):
        ServerSettings.from_env()


@pytest.mark.parametrize(("given", "lanes"), [(None, POSTGRES_WRITE_LANES), (1, 1), (3, 3)])
def test_a_database_runs_the_lanes_it_was_given(
    postgres_url: str, given: int | None, lanes: int
) -> None:
    database = open_database(postgres_url, postgres_write_lanes=given)
    try:
        committer: Any = database._committer()
        assert len(committer._lanes) == lanes
    finally:
        database.close()


def test_the_committer_is_made_with_the_database(postgres_url: str) -> None:
    """Not by the first grouped write: two threads' first writes at once each made one,
    and so two writers of the same lane (no test reproduces that race reliably; this
    one fails on the lazy version)."""
    database = open_database(postgres_url)
    try:
        committer = database._group
        assert committer is not None  # before any write
        database.write_grouped(lambda _conn: None)
        assert database._committer() is committer
    finally:
        database.close()
