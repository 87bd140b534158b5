"""`revenipe revenuecat configure|show|remove`, in-process, on both databases: the
authorization from an option or the environment, validated, never printed."""

from __future__ import annotations

import pytest

from integration.test_cli import Cli, cli  # noqa: F401  (the fixture)

AUTHORIZATION = "Bearer " + "r" * 32


def test_configure_from_the_environment_show_and_remove(
    cli: Cli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_id = cli.create_app()
    path = f"/v1/webhooks/revenuecat/{app_id}"
    shown = cli.json("revenuecat", "show", "--app", app_id)
    assert shown == {"app_id": app_id, "configured": False, "webhook_path": path}
    monkeypatch.setenv("REVENIPE_REVENUECAT_AUTHORIZATION", AUTHORIZATION)
    status, out, err = cli.run("revenuecat", "configure", "--app", app_id)
    assert status == 0, err
    assert AUTHORIZATION not in out + err and "r" * 32 not in out + err
    assert path in out
    monkeypatch.delenv("REVENIPE_REVENUECAT_AUTHORIZATION")
    assert cli.json("revenuecat", "show", "--app", app_id)["configured"] is True
    other = "x" * 20
    changed = cli.json("revenuecat", "configure", "--app", app_id, "--authorization", other)
    assert changed == {"app_id": app_id, "configured": True, "webhook_path": path}
    removed = cli.json("revenuecat", "remove", "--app", app_id)
    assert removed["configured"] is False
    assert cli.json("revenuecat", "show", "--app", app_id)["configured"] is False


def test_bad_values_and_sandbox_apps_are_refused_without_echoing(
    cli: Cli,  # noqa: F811
) -> None:
    app_id = cli.create_app()
    pasted = " leading-space-secret-value"
    status, out, err = cli.run(
        "revenuecat", "configure", "--app", app_id, "--authorization", pasted
    )
    assert status == 2 and "invalid_argument" in err and pasted.strip() not in out + err
    problem = cli.error("revenuecat", "configure", "--app", app_id)
    assert problem["code"] == "invalid_argument", "nothing given"
    sandbox = cli.json("apps", "create", "--name", "sandbox", "--sandbox")["app_id"]
    problem = cli.error(
        "revenuecat", "configure", "--app", sandbox, "--authorization", AUTHORIZATION
    )
    assert problem["code"] == "live_only"
    assert cli.error("revenuecat", "show", "--app", "app_missing")["code"] == "app_not_found"
