"""The CLI starts at once: building its parsers, `--help` and `--version` load no heavy
library (each command imports what it needs when it runs).

Checked by what is imported, never by a time: machines are shared and noisy.
`scripts/cli-startup` prints the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import revenipe
from revenipe.cli.common import DEFAULT_DATABASE_URL
from revenipe.cli.main import main

HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "yaml",
    "fastapi",
    "starlette",
    "uvicorn",
    "stripe",
    "pydantic",
    "httpx",
)

# Run in a fresh interpreter: this one has loaded everything already (conftest, other tests).
PROBE = """
import contextlib, io, json, sys
from revenipe.cli.main import build_parser, main
build_parser()
argv = json.loads(sys.argv[1])
status = None
if argv is not None:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
heavy = json.loads(sys.argv[2])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"status": status, "loaded": loaded}))
"""


def _probe(argv: list[str] | None) -> tuple[object, list[str]]:
    """(exit status, heavy modules loaded) of `main(argv)` in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(completed.stdout)
    return result["status"], result["loaded"]


@pytest.mark.parametrize(
    "argv",
    [
        None,  # import and build the parser only
        ["--help"],
        ["--version"],
        ["track", "--help"],
        ["serve", "--help"],
        ["stripe", "configure", "--help"],
        ["bench", "--help"],
    ],
    ids=lambda argv: "build_parser" if argv is None else " ".join(argv),
)
def test_help_and_version_load_no_heavy_module(argv: list[str] | None) -> None:
    status, loaded = _probe(argv)
    assert loaded == []
    assert status == (None if argv is None else 0)


def test_the_probe_sees_a_heavy_module_when_one_is_loaded() -> None:
    # `catalog validate` on a missing file runs its handler, which loads the YAML loader.
    status, loaded = _probe(["catalog", "validate", "/nonexistent/catalog.yaml"])
    assert "yaml" in loaded
    assert status == 2


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"revenipe {revenipe.__version__}\n"


def test_the_cli_default_database_is_the_storage_default() -> None:
    # The CLI spells it out to keep SQLAlchemy out of `--help`; the two must agree.
    from revenipe.storage.database import DEFAULT_DATABASE_URL as STORAGE_DEFAULT

    assert DEFAULT_DATABASE_URL == STORAGE_DEFAULT
