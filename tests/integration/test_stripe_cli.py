"""`revenipe stripe configure|show|remove`, in-process, on both databases: secrets from
options or the environment, validated, never printed."""

from __future__ import annotations

import pytest

from integration.test_cli import Cli, cli  # noqa: F401  (the fixture)

KEY = "sk_test_" + "c" * 24 + "LAST"
WEBHOOK_SECRET = "whsec_" + "w" * 32


def test_configure_from_the_environment_show_and_remove(
    cli: Cli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_id = cli.create_app()
    shown = cli.json("stripe", "show", "--app", app_id)
    assert shown == {
        "app_id": app_id,
        "configured": False,
        "mode": None,
        "secret_key_last4": None,
        "webhook_secret_set": False,
        "webhook_path": f"/v1/webhooks/stripe/{app_id}",
    }
    monkeypatch.setenv("REVENIPE_STRIPE_SECRET_KEY", KEY)
    monkeypatch.setenv("REVENIPE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    status, out, err = cli.run("stripe", "configure", "--app", app_id)
    assert status == 0, err
    assert KEY not in out + err and WEBHOOK_SECRET not in out + err
    assert "...LAST" in out and f"/v1/webhooks/stripe/{app_id}" in out
    monkeypatch.delenv("REVENIPE_STRIPE_SECRET_KEY")
    monkeypatch.delenv("REVENIPE_STRIPE_WEBHOOK_SECRET")
    shown = cli.json("stripe", "show", "--app", app_id)
    assert (shown["configured"], shown["mode"], shown["secret_key_last4"]) == (True, "test", "LAST")
    assert shown["webhook_secret_set"] is True
    # An option wins over nothing; what is not given is kept.
    other = "rk_live_" + "r" * 24 + "9999"
    changed = cli.json("stripe", "configure", "--app", app_id, "--secret-key", other)
    assert (changed["mode"], changed["secret_key_last4"], changed["webhook_secret_set"]) == (
        "live",
        "9999",
        True,
    )
    removed = cli.json("stripe", "remove", "--app", app_id)
    assert removed["configured"] is False


def test_bad_secrets_and_sandbox_apps_are_refused_without_echoing(
    cli: Cli,  # noqa: F811
) -> None:
    app_id = cli.create_app()
    pasted = "pk_live_" + "p" * 30
    status, out, err = cli.run("stripe", "configure", "--app", app_id, "--secret-key", pasted)
    assert status == 2 and "invalid_argument" in err and pasted not in out + err
    problem = cli.error("stripe", "configure", "--app", app_id)
    assert problem["code"] == "invalid_argument", "nothing given"
    sandbox = cli.json("apps", "create", "--name", "sandbox", "--sandbox")["app_id"]
    problem = cli.error("stripe", "configure", "--app", sandbox, "--secret-key", KEY)
    assert problem["code"] == "live_only"
    assert cli.error("stripe", "show", "--app", "app_missing")["code"] == "app_not_found"
