"""Reliability suites: real server processes under kills, database faults, fuzzing, floods.

Short versions run in CI with the rest of the suite; `bash scripts/reliability --long`
runs the long ones (the sizes come from the REVENIPE_RELIABILITY_* variables below).
Each suite records its figures with the `figures` fixture; they are printed at the end
of the run ("reliability figures"), also under pytest-xdist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

# The end-to-end fixtures (a fresh database per test, the server factory), shared.
from e2e.conftest import catalog_file, e2e_database, servers  # noqa: F401


def size(name: str, short: int) -> int:
    """A suite's size: REVENIPE_RELIABILITY_<NAME> if set, else the CI-sized `short`."""
    value = os.environ.get(f"REVENIPE_RELIABILITY_{name}")
    return int(value) if value else short


@pytest.fixture
def figures(record_property: Callable[[str, object], None], request: pytest.FixtureRequest) -> Any:
    """`figures(name=value, ...)` keeps figures for the end-of-run summary."""

    def keep(**values: Any) -> None:
        record_property("reliability", json.dumps({"test": request.node.nodeid, **values}))

    return keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = []
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get(
        "failed", []
    ):
        if report.when != "call":
            continue
        for name, value in getattr(report, "user_properties", ()):
            if name == "reliability":
                lines.append(json.loads(value))
    if not lines:
        return
    terminalreporter.section("reliability figures")
    for line in lines:
        test = line.pop("test")
        terminalreporter.write_line(test)
        terminalreporter.write_line("    " + ", ".join(f"{k}={v}" for k, v in line.items()))
