"""`revenipe reservations hold|settle|release|show`, on SQLite and PostgreSQL."""

from __future__ import annotations

from integration.test_cli import Cli, assert_app_verifies, cli  # noqa: F401 (fixture)


def test_hold_settle_release_and_show(cli: Cli) -> None:  # noqa: F811
    app_id = cli.create_app()
    base = ["--app", app_id]
    held = cli.json(
        "reservations", "hold", *base, "--customer", "alice", "--id", "credits", "--value", "40"
    )
    assert held["success"] and held["held"] == 40 and held["remaining"] == 60
    rid = held["reservation_id"]
    shown = cli.json("reservations", "show", *base, "--reservation", rid)
    assert (shown["state"], shown["held"]) == ("held", 40)
    settled = cli.json("reservations", "settle", *base, "--reservation", rid, "--value", "25")
    assert (settled["consumed"], settled["released"], settled["remaining"]) == (25, 15, 75)
    status, out, _ = cli.run("reservations", "release", *base, "--reservation", rid)
    assert status == 0 and out.startswith("refused (reservation_closed)")
    status, out, _ = cli.run(
        "reservations",
        "hold",
        *base,
        "--customer",
        "alice",
        "--id",
        "credits",
        "--value",
        "5",
        "--ttl-seconds",
        "60",
    )
    assert status == 0 and out.startswith("held 5 of credits as res_")
    assert cli.usage_key(app_id, "alice") == 70
    error = cli.error(
        "reservations",
        "hold",
        *base,
        "--customer",
        "alice",
        "--id",
        "credits",
        "--value",
        "5",
        "--ttl-seconds",
        "0",
    )
    assert error["code"] == "invalid_argument"
    assert cli.error("reservations", "show", *base, "--reservation", "res_x")["code"] == (
        "reservation_not_found"
    )
    assert_app_verifies(cli, app_id)
