"""`revenipe operators create|list` and `revenipe dashboard link`."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from revenipe.cli.main import main
from revenipe.services import operators as operator_service
from revenipe.services.context import ServiceContext
from revenipe.storage.database import open_database


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_create_from_standard_input_then_list(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    monkeypatch.setattr("sys.stdin", io.StringIO("a password from a script\n"))
    status, out, _ = _run(
        capsys, "operators", "create", "--email", email, "--database-url", database_url, "--json"
    )
    assert status == 0
    created = json.loads(out)
    assert created["email"] == email and "password" not in created
    status, out, _ = _run(capsys, "operators", "list", "--database-url", database_url, "--json")
    assert email in [o["email"] for o in json.loads(out)["operators"]]
    context = ServiceContext(db=open_database(database_url))
    try:
        session = operator_service.sign_in_with_password(
            context, email, "a password from a script", "127.0.0.1"
        )
        assert session.operator.id == created["operator_id"]
    finally:
        context.db.close()


def test_generate_prints_the_password_once(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    email = f"gen-{uuid.uuid4().hex[:8]}@example.com"
    status, out, _ = _run(
        capsys,
        "operators",
        "create",
        "--email",
        email,
        "--generate",
        "--database-url",
        database_url,
    )
    assert status == 0
    password = out.split("password (shown once, keep it): ", 1)[1].strip()
    assert len(password) >= 20
    status, _, err = _run(
        capsys,
        "operators",
        "create",
        "--email",
        email,
        "--generate",
        "--database-url",
        database_url,
    )
    assert status == 2 and "exists" in err


def test_dashboard_link(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.delenv("REVENIPE_PUBLIC_URL", raising=False)
    status, out, _ = _run(capsys, "dashboard", "link", "--database-url", url, "--json")
    assert status == 0
    first = json.loads(out)
    assert first["url"].startswith("http://127.0.0.1:8080/dashboard/link/")
    assert first["operator_email"] is None  # no operator yet: a set-up link
    status, out, _ = _run(
        capsys, "dashboard", "link", "--ttl", "60", "--base-url", "https://ops.example/",
        "--database-url", url,
    )  # fmt: skip
    assert status == 0 and out.startswith("https://ops.example/dashboard/link/")
    status, _, err = _run(capsys, "dashboard", "link", "--ttl", "5", "--database-url", url)
    assert status == 2 and "60" in err
    status, _, err = _run(
        capsys, "dashboard", "link", "--base-url", "ftp://x", "--database-url", url
    )
    assert status == 2 and "http" in err
