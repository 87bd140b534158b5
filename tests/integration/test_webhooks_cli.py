"""`revenipe webhooks ...` in-process through `main([...])`, on both databases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from revenipe.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any]:
    status = main(["--database-url", url, *args, "--json"])
    out, err = capsys.readouterr()
    return status, json.loads(out or err)


def test_webhooks_commands(capsys: pytest.CaptureFixture[str], database_url: str) -> None:
    status, app = _run(capsys, database_url, "apps", "create", "--name", "hooks")
    assert status == 0
    base = ["webhooks"]
    status, refused = _run(
        capsys, database_url, *base, "create", "--app", app["app_id"], "--url", "https://10.0.0.1/"
    )
    assert status == 2 and refused["code"] == "unsafe_webhook_url"
    status, created = _run(
        capsys,
        database_url,
        *base,
        "create",
        "--app",
        app["app_id"],
        "--url",
        "http://127.0.0.1:9/hook",
        "--event-type",
        "usage.exhausted",
        "--allow-private-webhooks",
    )
    assert status == 0 and created["secret"].startswith("whsec_")
    endpoint = ["--app", app["app_id"], "--endpoint", created["id"]]
    status, ping = _run(capsys, database_url, *base, "test", *endpoint)
    assert status == 0 and ping["event_id"].startswith("msg_")
    status, page = _run(capsys, database_url, *base, "deliveries", *endpoint)
    assert [d["event_type"] for d in page["deliveries"]] == ["ping"]
    status, updated = _run(capsys, database_url, *base, "update", *endpoint, "--disable")
    assert status == 0 and updated["enabled"] is False
    status, listed = _run(capsys, database_url, *base, "list", "--app", app["app_id"])
    assert [e["id"] for e in listed["endpoints"]] == [created["id"]]
    status, _ = _run(capsys, database_url, *base, "delete", *endpoint)
    assert status == 0
    status, listed = _run(capsys, database_url, *base, "list", "--app", app["app_id"])
    assert listed["endpoints"] == []
