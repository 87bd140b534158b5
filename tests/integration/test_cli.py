"""The `revenipe` CLI end to end, run in-process through `main([...])`, on both databases.

Exit status (cli/main.py): 0 on success (a refused track included), 1 when `verify`
finds a broken invariant, 2 on bad input. `--json` output is the contract scripts rely
on: exact key sets, integers as JSON integers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import revenipe
from revenipe.cli.main import main
from revenipe.storage.database import normalize_url

CATALOG_V1 = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metered
  - id: purchased_credits
    name: Purchased credits
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, purchased_credits]
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    price: 0
    default: true
    grants:
      - entitlement: monthly_credits
        amount: 100
        reset: period
      - entitlement: export_hd
  - id: pack_50
    name: 50 credits
    type: one_time
    price: 500
    grants:
      - entitlement: purchased_credits
        amount: 50
        expires_after: P30D
"""

# Version 2: the free tier grows to 200 and a new pack appears.
CATALOG_V2 = (
    CATALOG_V1.replace("amount: 100", "amount: 200")
    + """\
  - id: pack_500
    name: 500 credits
    type: one_time
    grants:
      - entitlement: purchased_credits
        amount: 500
"""
)

# Drops `purchased_credits`, which customers hold once a pack was granted.
CATALOG_WITHOUT_PURCHASED = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metered
  - id: export_hd
    name: HD export
    type: boolean
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits]
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    default: true
    grants:
      - entitlement: monthly_credits
        amount: 100
        reset: period
      - entitlement: export_hd
"""

# `export_hd` becomes metered while customers hold it as a boolean.
CATALOG_RETYPED = CATALOG_V1.replace(
    "  - id: export_hd\n    name: HD export\n    type: boolean",
    "  - id: export_hd\n    name: HD export\n    type: metered",
).replace("      - entitlement: export_hd\n", "      - entitlement: export_hd\n        amount: 1\n")

INVALID_CATALOG = """
entitlements:
  - id: monthly_credits
    name: Monthly credits
    type: metred
usage_keys:
  - id: credits
    name: Credits
    entitlements: [monthly_credits, nope]
products:
  - id: free
    name: Free
    type: subscription
    recurring_interval: month
    grants:
      - entitlement: monthly_credits
        amount: -5
"""

TRACK_KEYS = {
    "success",
    "requested",
    "consumed",
    "remaining",
    "entitlement_id",
    "access_source_id",
    "error",
    "usage_event_id",
    "action",
    "unit_price",
}
CUSTOMER_KEYS = {
    "client_id",
    "entitlements",
    "usage_keys",
    "subscriptions",
    "add_ons",
    "base_plans",
}


class Cli:
    """Runs `revenipe ...` in-process against one database; captures what it prints."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        self.url = url
        self.capsys = capsys
        self.tmp_path = tmp_path

    def run(self, *argv: str, database: bool = True) -> tuple[int, str, str]:
        """`revenipe ARGV --database-url URL` (without the URL if not `database`)."""
        return self.run_raw(*argv, *(["--database-url", self.url] if database else []))

    def run_raw(self, *argv: str) -> tuple[int, str, str]:
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse rejects what it cannot parse
            status = exc.code if isinstance(exc.code, int) else 2
        out, err = self.capsys.readouterr()
        return status, out, err

    def json(self, *argv: str) -> Any:
        """Run with --json; it must succeed (exit 0, nothing on stderr)."""
        status, out, err = self.run(*argv, "--json")
        assert status == 0, err
        assert err == ""
        return json.loads(out)

    def error(self, *argv: str) -> dict[str, Any]:
        """Run with --json; it must fail with exit 2 and a JSON problem on stderr."""
        status, out, err = self.run(*argv, "--json")
        assert status == 2, (status, out, err)
        assert out == ""
        problem: dict[str, Any] = json.loads(err)
        return problem

    def file(self, name: str, content: str) -> str:
        path = self.tmp_path / name
        path.write_text(content, encoding="utf-8")
        return str(path)

    def create_app(self, catalog: str = CATALOG_V1, name: str = "CLI app") -> str:
        created = self.json(
            "apps", "create", "--name", name, "--catalog", self.file("c.yaml", catalog)
        )
        app_id: str = created["app_id"]
        return app_id

    def show(self, app_id: str, customer: str) -> dict[str, Any]:
        shown: dict[str, Any] = self.json(
            "customers", "show", "--app", app_id, "--customer", customer
        )
        return shown

    def usage_key(self, app_id: str, customer: str, key: str = "credits") -> int:
        keys = {k["key_id"]: k["remaining"] for k in self.show(app_id, customer)["usage_keys"]}
        remaining: int = keys[key]
        return remaining

    def track(self, app_id: str, customer: str, tracked_id: str, value: int, *extra: str) -> Any:
        return self.json(
            "track",
            "--app",
            app_id,
            "--customer",
            customer,
            "--id",
            tracked_id,
            "--value",
            str(value),
            *extra,
        )


@pytest.fixture
def cli(database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(database_url, capsys, tmp_path)


def is_int(value: object) -> bool:
    return type(value) is int


# --- apps and catalogs ---------------------------------------------------------------------


def test_apps_create_returns_app_id_and_secret_key(cli: Cli) -> None:
    catalog = cli.file("catalog.yaml", CATALOG_V1)
    created = cli.json("apps", "create", "--name", "Photo app", "--catalog", catalog)
    assert set(created) == {"app_id", "secret_key", "catalog_version", "sandbox", "return_urls"}
    assert created["sandbox"] is False
    assert created["app_id"].startswith("app_")
    assert created["secret_key"].startswith("sk_") and len(created["secret_key"]) > 30
    assert created["catalog_version"] == 1 and is_int(created["catalog_version"])

    listed = cli.json("apps", "list")["apps"]
    mine = [a for a in listed if a["app_id"] == created["app_id"]]
    assert [(a["name"], a["catalog_version"]) for a in mine] == [("Photo app", 1)]
    assert all(created["secret_key"] not in json.dumps(a) for a in listed)

    sandbox = cli.json("apps", "create", "--name", "Try out", "--sandbox")
    assert sandbox["sandbox"] is True

    # Human output shows the key once, with the warning.
    status, out, err = cli.run("apps", "create", "--name", "Other", "--catalog", catalog)
    assert status == 0 and err == ""
    assert "secret key: sk_" in out and "shown only now" in out

    # Without a catalog: version 0, an empty catalog.
    bare = cli.json("apps", "create", "--name", "Bare")
    assert bare["catalog_version"] == 0


def test_apps_create_with_an_invalid_catalog_creates_nothing(cli: Cli) -> None:
    before = {a["app_id"] for a in cli.json("apps", "list")["apps"]}
    problem = cli.error(
        "apps", "create", "--name", "Broken", "--catalog", cli.file("bad.yaml", INVALID_CATALOG)
    )
    assert problem["code"] == "invalid_catalog"
    assert {a["app_id"] for a in cli.json("apps", "list")["apps"]} == before


def test_catalog_validate(cli: Cli) -> None:
    valid = cli.file("valid.yaml", CATALOG_V1)
    result = cli.json("catalog", "validate", valid)
    assert result == {"valid": True, "entitlements": 3, "usage_keys": 1, "products": 2}
    status, out, err = cli.run("catalog", "validate", valid)
    assert status == 0 and out.startswith("valid: 3 entitlements, 1 usage keys, 2 products")

    invalid = cli.file("invalid.yaml", INVALID_CATALOG)
    problem = cli.error("catalog", "validate", invalid)
    assert problem["code"] == "invalid_catalog"
    paths = {p["path"] for p in problem["problems"]}
    # Every problem at once, each named by its field path.
    assert paths == {
        "entitlements[0].type",
        "usage_keys[0].entitlements[1]",
        "products[0].grants[0].amount",
    }
    assert all(p["message"] for p in problem["problems"])
    status, out, err = cli.run("catalog", "validate", invalid)
    assert status == 2 and out == ""
    assert "products[0].grants[0].amount" in err and "'metred'" in err

    missing = cli.error("catalog", "validate", str(cli.tmp_path / "missing.yaml"))
    assert missing["code"] == "invalid_catalog"
    assert [p["path"] for p in missing["problems"]] == ["<file>"]
    assert "missing.yaml" in missing["problems"][0]["message"]


def test_catalog_validate_needs_no_database(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVENIPE_DATABASE_URL", raising=False)
    status, _, err = cli.run(
        "catalog", "validate", cli.file("valid.yaml", CATALOG_V1), database=False
    )
    assert status == 0, err
    assert not (tmp_path / "revenipe.db").exists()


def test_catalog_apply(cli: Cli) -> None:
    app_id = cli.create_app(CATALOG_V1)
    v1 = cli.file("v1.yaml", CATALOG_V1)
    assert cli.json("catalog", "apply", "--app", app_id, v1) == {
        "app_id": app_id,
        "version": 1,
        "changed": False,
    }
    status, out, _ = cli.run("catalog", "apply", "--app", app_id, v1)
    assert status == 0 and "unchanged" in out

    # alice holds both metered entitlements and the boolean one.
    cli.json("grant", "--app", app_id, "--customer", "alice", "--product", "pack_50")
    assert cli.track(app_id, "alice", "credits", 30)["remaining"] == 120

    v2 = cli.file("v2.yaml", CATALOG_V2)
    assert cli.json("catalog", "apply", "--app", app_id, v2) == {
        "app_id": app_id,
        "version": 2,
        "changed": True,
    }
    # What alice holds is not rewritten; a new customer gets the new terms.
    assert cli.usage_key(app_id, "alice") == 120
    cli.json("grant", "--app", app_id, "--customer", "bob", "--product", "pack_500")
    assert cli.usage_key(app_id, "bob") == 200 + 500

    for name, content, held in (
        ("without.yaml", CATALOG_WITHOUT_PURCHASED, "purchased_credits"),
        ("retyped.yaml", CATALOG_RETYPED, "export_hd"),
    ):
        problem = cli.error("catalog", "apply", "--app", app_id, cli.file(name, content))
        assert problem["code"] == "catalog_conflict"
        assert held in problem["message"]
    # Refused changes left version 2 in place.
    assert cli.json("catalog", "apply", "--app", app_id, v2)["changed"] is False
    assert cli.json("catalog", "apply", "--app", app_id, v2)["version"] == 2
    assert cli.usage_key(app_id, "alice") == 120

    invalid = cli.error("catalog", "apply", "--app", app_id, cli.file("x.yaml", INVALID_CATALOG))
    assert invalid["code"] == "invalid_catalog"
    assert cli.error("catalog", "apply", "--app", "app_nope", v1)["code"] == "app_not_found"
    assert_app_verifies(cli, app_id)


# --- customers, grants, track, check, reverse ------------------------------------------------


def test_customers_show_shape(cli: Cli) -> None:
    app_id = cli.create_app()
    cli.json("grant", "--app", app_id, "--customer", "alice", "--product", "pack_50")
    shown = cli.show(app_id, "alice")
    assert set(shown) == CUSTOMER_KEYS
    assert isinstance(shown["client_id"], str) and shown["client_id"].startswith("cus_")
    for key in CUSTOMER_KEYS - {"client_id"}:
        assert isinstance(shown[key], list), key

    entitlements = shown["entitlements"]
    assert sorted((e["entitlement_id"], e["type"], e["remaining"]) for e in entitlements) == [
        ("export_hd", "boolean", 1),
        ("monthly_credits", "metered", 100),
        ("purchased_credits", "metered", 50),
    ]
    for entry in entitlements:
        assert set(entry) == {
            "entitlement_id",
            "access_source_id",
            "type",
            "remaining",
            "expires_at",
        }
        assert isinstance(entry["access_source_id"], str)
        assert is_int(entry["remaining"])
    pack = next(e for e in entitlements if e["entitlement_id"] == "purchased_credits")
    assert pack["expires_at"].endswith("Z")
    monthly = next(e for e in entitlements if e["entitlement_id"] == "monthly_credits")
    assert monthly["expires_at"] is None

    assert shown["usage_keys"] == [{"key_id": "credits", "name": "Credits", "remaining": 150}]
    assert is_int(shown["usage_keys"][0]["remaining"])

    (subscription,) = shown["subscriptions"]
    assert (subscription["product_id"], subscription["status"]) == ("free", "active")
    assert isinstance(subscription["is_trial"], bool)
    assert subscription["renews_at"].endswith("Z")
    (base_plan,) = shown["base_plans"]
    assert set(base_plan) >= {"source_id", "status", "product_id", "interval", "period_end"}
    assert (base_plan["interval"], base_plan["source_id"]) == (
        "month",
        subscription["access_source_id"],
    )
    assert shown["add_ons"] == []

    status, out, _ = cli.run("customers", "show", "--app", app_id, "--customer", "alice")
    assert status == 0 and shown["client_id"] in out and "credits: 150 remaining" in out
    unknown = cli.error("customers", "show", "--app", app_id, "--customer", "nobody")
    assert unknown["code"] == "customer_not_found"


def test_grant_product_and_entitlement(cli: Cli) -> None:
    app_id = cli.create_app()
    by_product = cli.json("grant", "--app", app_id, "--customer", "alice", "--product", "pack_50")
    assert set(by_product) == {"client_id", "access_source_id", "grant_ids"}
    assert len(by_product["grant_ids"]) == 1

    by_entitlement = cli.json(
        "grant",
        "--app",
        app_id,
        "--customer",
        "alice",
        "--entitlement",
        "purchased_credits",
        "--amount",
        "7",
        "--expires-at",
        "2030-01-01T00:00:00Z",
        "--priority",
        "-1",
    )
    assert by_entitlement["client_id"] == by_product["client_id"]
    entries = {e["access_source_id"]: e for e in cli.show(app_id, "alice")["entitlements"]}
    manual = entries[by_entitlement["access_source_id"]]
    assert (manual["entitlement_id"], manual["remaining"], manual["expires_at"]) == (
        "purchased_credits",
        7,
        "2030-01-01T00:00:00Z",
    )
    assert cli.usage_key(app_id, "alice") == 157

    # Priority -1 pays before the pack, although the pack expires sooner.
    plan = cli.json(
        "check", "--app", app_id, "--customer", "alice", "--id", "purchased_credits", "--value", "8"
    )
    assert [(d["grant_id"], d["amount"]) for d in plan["draws"]] == [
        (by_entitlement["grant_ids"][0], 7),
        (by_product["grant_ids"][0], 1),
    ]

    # An expiry given with an offset is stored in UTC.
    offset = cli.json(
        "grant",
        "--app",
        app_id,
        "--customer",
        "alice",
        "--entitlement",
        "purchased_credits",
        "--amount",
        "1",
        "--expires-at",
        "2030-01-01T02:00:00+02:00",
    )
    entries = {e["access_source_id"]: e for e in cli.show(app_id, "alice")["entitlements"]}
    assert entries[offset["access_source_id"]]["expires_at"] == "2030-01-01T00:00:00Z"

    boolean = cli.json("grant", "--app", app_id, "--customer", "bob", "--entitlement", "export_hd")
    bob = cli.show(app_id, "bob")["entitlements"]
    assert {(e["entitlement_id"], e["access_source_id"]) for e in bob} >= {
        ("export_hd", boolean["access_source_id"])
    }
    assert_app_verifies(cli, app_id)


def test_track_json(cli: Cli) -> None:
    app_id = cli.create_app()
    result = cli.track(app_id, "alice", "credits", 3)
    assert set(result) == TRACK_KEYS
    assert result["success"] is True
    assert (result["requested"], result["consumed"], result["remaining"]) == (3, 3, 97)
    assert all(is_int(result[k]) for k in ("requested", "consumed", "remaining"))
    assert (result["entitlement_id"], result["access_source_id"], result["error"]) == (
        "credits",
        None,
        None,
    )
    assert result["usage_event_id"].startswith("use_")

    by_entitlement = cli.track(app_id, "alice", "monthly_credits", 2)
    assert (by_entitlement["entitlement_id"], by_entitlement["remaining"]) == (
        "monthly_credits",
        95,
    )
    source = cli.show(app_id, "alice")["entitlements"]
    free_source = next(e for e in source if e["entitlement_id"] == "monthly_credits")
    by_source = cli.track(
        app_id,
        "alice",
        "monthly_credits",
        5,
        "--access-source-id",
        free_source["access_source_id"],
    )
    assert (by_source["access_source_id"], by_source["remaining"]) == (
        free_source["access_source_id"],
        90,
    )

    refused = cli.track(app_id, "alice", "credits", 91)
    assert set(refused) == TRACK_KEYS
    assert (refused["success"], refused["consumed"], refused["remaining"], refused["error"]) == (
        False,
        0,
        90,
        "insufficient_balance",
    )
    assert cli.usage_key(app_id, "alice") == 90

    status, out, err = cli.run(
        "track", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "1"
    )
    assert status == 0 and err == "" and out.strip() == "tracked 1 of credits: 89 remaining"
    status, out, _ = cli.run(
        "track", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "1000"
    )
    assert status == 0 and out.startswith("refused (insufficient_balance)")
    assert_app_verifies(cli, app_id)


def test_idempotency_key_replay(cli: Cli) -> None:
    app_id = cli.create_app()
    argv = ["track", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "4"]
    argv += ["--idempotency-key", "export-2026-001", "--json"]
    first = cli.run(*argv)
    second = cli.run(*argv)
    third = cli.run(*argv)
    assert first[0] == 0 and first[2] == ""
    assert first == second == third
    assert json.loads(first[1])["remaining"] == 96
    assert cli.usage_key(app_id, "alice") == 96
    # Another key is another track.
    another = cli.track(app_id, "alice", "credits", 4, "--idempotency-key", "export-2026-002")
    assert another["remaining"] == 92
    assert_app_verifies(cli, app_id)


def test_check(cli: Cli) -> None:
    app_id = cli.create_app()
    pack = cli.json("grant", "--app", app_id, "--customer", "alice", "--product", "pack_50")
    before = cli.show(app_id, "alice")
    monthly = next(e for e in before["entitlements"] if e["entitlement_id"] == "monthly_credits")

    plan = cli.json(
        "check", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "120"
    )
    assert set(plan) == {
        "would_succeed",
        "requested",
        "available",
        "remaining_after",
        "entitlement_id",
        "access_source_id",
        "error",
        "draws",
        "action",
        "unit_price",
    }
    assert (plan["would_succeed"], plan["available"], plan["remaining_after"], plan["error"]) == (
        True,
        150,
        30,
        None,
    )
    assert [(d["entitlement_id"], d["amount"], d["access_source_id"]) for d in plan["draws"]] == [
        ("monthly_credits", 100, monthly["access_source_id"]),
        ("purchased_credits", 20, pack["access_source_id"]),
    ]
    assert plan["draws"][1]["grant_id"] == pack["grant_ids"][0]

    refused = cli.json(
        "check", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "151"
    )
    assert (refused["would_succeed"], refused["error"], refused["draws"]) == (
        False,
        "insufficient_balance",
        [],
    )
    status, out, _ = cli.run(
        "check", "--app", app_id, "--customer", "alice", "--id", "credits", "--value", "120"
    )
    assert status == 0 and out.startswith("would succeed: 120 of 150 available")
    # A check changes nothing.
    assert cli.show(app_id, "alice") == before
    unknown = cli.error(
        "check", "--app", app_id, "--customer", "nobody", "--id", "credits", "--value", "1"
    )
    assert unknown["code"] == "customer_not_found"


def test_reverse(cli: Cli) -> None:
    app_id = cli.create_app()
    pack = cli.json("grant", "--app", app_id, "--customer", "alice", "--product", "pack_50")
    tracked = cli.track(app_id, "alice", "credits", 120)
    assert tracked["remaining"] == 30
    event = tracked["usage_event_id"]
    plan_monthly = next(
        e["access_source_id"]
        for e in cli.show(app_id, "alice")["entitlements"]
        if e["entitlement_id"] == "monthly_credits"
    )
    assert plan_monthly

    partial = cli.json("reverse", "--app", app_id, "--usage-event", event, "--amount", "30")
    assert set(partial) == {"reversal_id", "usage_event_id", "amount", "total_reversed", "credits"}
    assert (partial["usage_event_id"], partial["amount"], partial["total_reversed"]) == (
        event,
        30,
        30,
    )
    # The last grant drawn (the pack) is refunded first.
    assert partial["credits"][0] == {"grant_id": pack["grant_ids"][0], "amount": 20}
    assert [c["amount"] for c in partial["credits"]] == [20, 10]
    assert cli.usage_key(app_id, "alice") == 60

    rest = cli.json("reverse", "--app", app_id, "--usage-event", event)
    assert (rest["amount"], rest["total_reversed"]) == (90, 120)
    assert cli.usage_key(app_id, "alice") == 150
    nothing_left = cli.json("reverse", "--app", app_id, "--usage-event", event)
    assert (nothing_left["amount"], nothing_left["reversal_id"], nothing_left["credits"]) == (
        0,
        None,
        [],
    )
    status, out, _ = cli.run("reverse", "--app", app_id, "--usage-event", event)
    assert status == 0 and out.strip() == "reversed 0 (total 120)"
    assert_app_verifies(cli, app_id)


# --- verify --------------------------------------------------------------------------------


def assert_app_verifies(cli: Cli, app_id: str) -> None:
    report = cli.json("verify", "--app", app_id)
    assert report["ok"] is True, report["problems"]


def test_verify(cli: Cli) -> None:
    app_id = cli.create_app()
    cli.track(app_id, "alice", "credits", 5)
    report = cli.json("verify", "--app", app_id)
    assert set(report) == {"ok", "grants", "ledger_entries", "usage_events", "problems"}
    assert report == {
        "ok": True,
        "grants": 2,
        "ledger_entries": 2,
        "usage_events": 1,
        "problems": [],
    }
    whole = cli.json("verify")
    assert whole["ok"] is True, whole["problems"]
    assert whole["grants"] >= 2 and is_int(whole["ledger_entries"])
    status, out, err = cli.run("verify", "--app", app_id)
    assert status == 0 and err == ""
    assert out.strip() == "ok: 2 grants, 2 ledger entries, 1 usage events"


def test_verify_detects_a_corrupted_ledger(cli: Cli) -> None:
    app_id = cli.create_app()
    tracked = cli.track(app_id, "alice", "monthly_credits", 5)
    assert tracked["success"]
    other_app = cli.create_app(name="untouched")
    cli.track(other_app, "alice", "credits", 1)
    engine = create_engine(normalize_url(cli.url))
    with engine.connect() as conn:
        grant_id = conn.execute(
            text(
                "SELECT id FROM grants WHERE app_id = :app AND entitlement_id = 'monthly_credits'"
            ),
            {"app": app_id},
        ).scalar_one()
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE grants SET balance = balance + 1 WHERE id = :id"), {"id": grant_id}
            )
        status, out, err = cli.run("verify", "--app", app_id, "--json")
        assert status == 1, err
        report = json.loads(out)
        assert report["ok"] is False
        assert any(grant_id in problem for problem in report["problems"])
        assert any("balance 96 but ledger sum 95" in p for p in report["problems"])

        status, out, _ = cli.run("verify")
        assert status == 1
        assert out.startswith("BROKEN:") and grant_id in out

        # Other apps are still fine on their own.
        assert cli.json("verify", "--app", other_app)["ok"] is True
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE grants SET balance = balance - 1 WHERE id = :id"), {"id": grant_id}
            )
        engine.dispose()
    assert_app_verifies(cli, app_id)


# --- where the database comes from ---------------------------------------------------------


def test_database_url_from_the_environment(
    cli: Cli, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVENIPE_DATABASE_URL", database_url)
    status, out, err = cli.run("apps", "create", "--name", "From env", "--json", database=False)
    assert status == 0, err
    app_id = json.loads(out)["app_id"]
    with revenipe.open(database_url) as backend:
        assert backend.app(app_id).app_id == app_id

    # --database-url wins over the environment.
    monkeypatch.setenv("REVENIPE_DATABASE_URL", "mysql://nobody@nowhere/none")
    assert cli.json("verify", "--app", app_id)["ok"] is True
    status, _, err = cli.run("verify", "--app", app_id, "--json", database=False)
    assert status == 2 and json.loads(err)["code"] == "invalid_argument"


def test_default_database_is_revenipe_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVENIPE_DATABASE_URL", raising=False)
    assert main(["apps", "create", "--name", "Default", "--json"]) == 0
    app_id = json.loads(capsys.readouterr().out)["app_id"]
    assert (tmp_path / "revenipe.db").exists()
    with revenipe.open(f"sqlite:///{tmp_path / 'revenipe.db'}") as backend:
        assert backend.app(app_id).app_id == app_id


def test_global_options_before_the_command(cli: Cli) -> None:
    """`revenipe --database-url URL --json verify ...`: options before the command work."""
    app_id = cli.create_app()
    status, out, err = cli.run_raw("--database-url", cli.url, "--json", "verify", "--app", app_id)
    assert status == 0, err
    assert json.loads(out)["ok"] is True


def test_sandbox_clock_moves_forward_for_sandbox_apps_only(cli: Cli) -> None:
    sandbox = cli.json("apps", "create", "--name", "Try out", "--sandbox")["app_id"]
    live = cli.json("apps", "create", "--name", "Live")["app_id"]
    assert cli.json("sandbox", "clock", "--app", sandbox)["clock_offset_seconds"] == 0
    moved = cli.json("sandbox", "advance", "--app", sandbox, "--days", "31", "--hours", "1")
    assert moved["clock_offset_seconds"] == 31 * 86_400 + 3_600 and moved["app_id"] == sandbox
    assert cli.json("sandbox", "clock", "--app", sandbox)["now"] >= moved["now"]
    status, _, err = cli.run("sandbox", "advance", "--app", live, "--days", "1")
    assert status == 2 and "sandbox_only" in err
    for bad in (["--days", "-1"], ["--days", "0"], ["--days", "1.5"]):
        status, _, err = cli.run("sandbox", "advance", "--app", sandbox, *bad)
        assert status == 2, (bad, err)
    assert (
        cli.json("sandbox", "clock", "--app", sandbox)["clock_offset_seconds"]
        == moved["clock_offset_seconds"]
    )


# --- return URLs and priced actions (issue 15) ---------------------------------------------


def test_apps_create_and_update_set_the_return_urls(cli: Cli) -> None:
    created = cli.json(
        "apps",
        "create",
        "--name",
        "Mobile app",
        "--return-url",
        "myapp://paid",
        "--return-url",
        "https://example.com/return/*",
    )
    assert created["return_urls"] == ["myapp://paid", "https://example.com/return/*"]
    app_id = created["app_id"]
    updated = cli.json("apps", "update", "--app", app_id, "--return-url", "myapp://done")
    assert updated == {
        "app_id": app_id,
        "name": "Mobile app",
        "token_policy": "enforce",
        "return_urls": ["myapp://done"],
    }
    both = cli.json(
        "apps", "update", "--app", app_id, "--token-policy", "open", "--return-url", "x://y"
    )
    assert (both["token_policy"], both["return_urls"]) == ("open", ["x://y"])
    cleared = cli.json("apps", "update", "--app", app_id, "--clear-return-urls")
    assert cleared["return_urls"] == []
    # Hostile or empty updates change nothing.
    problem = cli.error("apps", "update", "--app", app_id, "--return-url", "javascript:alert(1)")
    assert problem["code"] == "invalid_argument"
    assert cli.error("apps", "update", "--app", app_id)["code"] == "invalid_argument"
    problem = cli.error(
        "apps", "create", "--name", "Bad", "--return-url", "data:text/html,<b>hi</b>"
    )
    assert problem["code"] == "invalid_argument"
    assert "Bad" not in [a["name"] for a in cli.json("apps", "list")["apps"]]


def test_track_a_priced_action_from_the_command_line(cli: Cli) -> None:
    priced = CATALOG_V1.replace(
        "    entitlements: [monthly_credits, purchased_credits]\n",
        "    entitlements: [monthly_credits, purchased_credits]\n"
        "    costs: {image_generation: 5}\n",
    )
    assert "costs:" in priced
    app_id = cli.create_app(priced)
    tracked = cli.track(app_id, "alice", "image_generation", 2)
    assert tracked["success"] and tracked["consumed"] == 10
    assert tracked["entitlement_id"] == "image_generation"
    assert (tracked["action"], tracked["unit_price"]) == ("image_generation", 5)
    assert cli.usage_key(app_id, "alice") == 90
