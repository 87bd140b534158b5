"""Bad input, through the embedded API and through the CLI: exact codes, nothing changed.

Two kinds of "no" (engine/errors.py): an *input error* raises `RevenipeError` with an
`ErrorCode` (CLI: exit status 2, the code and a message on stderr); a *refusal* is an
answer, `success: false` with a `RefusalCode` (CLI: exit status 0, the answer on
stdout). Either way, no balance changes and the ledger invariants hold afterwards.

These tests run on the real clock (the CLI does), so the module overrides `backend`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

import revenipe
from revenipe import ErrorCode, RefusalCode, RevenipeError
from revenipe.cli.main import main
from revenipe.storage.schema import (
    access_sources,
    customers,
    grants,
    ledger_entries,
    reversals,
    usage_events,
)
from revenipe.wire.usage import track_result_to_wire

from support import DEMO_CATALOG, assert_verified

MAX_AMOUNT = 2**53 - 1


@pytest.fixture
def backend(database_url: str) -> Iterator[revenipe.Backend]:
    """The real clock: the CLI, run in-process, opens its own backend on it."""
    with revenipe.open(database_url) as opened:
        yield opened


@dataclass
class World:
    """Two apps with the demo catalog. In A: alice (free tier + a 50 pack) and bob (free
    tier). In B: another alice (free tier), a different customer."""

    backend: revenipe.Backend
    url: str
    a: revenipe.App
    b: revenipe.App
    alice_pack_source: str
    bob_free_source: str
    alice_event: str
    """A usage event of alice in A that consumed 5."""
    b_event: str
    """A usage event of alice in B that consumed 4."""

    @property
    def app_ids(self) -> tuple[str, str]:
        return (self.a.app_id, self.b.app_id)


@pytest.fixture
def world(backend: revenipe.Backend, database_url: str) -> World:
    catalog = revenipe.load_catalog(DEMO_CATALOG)
    a = backend.app(backend.create_app("app A", catalog).app.id)
    b = backend.app(backend.create_app("app B", catalog).app.id)
    pack = a.grant_product("alice", "pack_50")
    a.login("bob")
    (bob_free,) = (s.source.id for s in a.state("bob").sources if s.source.product_id == "free")
    alice_event = a.track("alice", "credits", 5)
    b_event = b.track("alice", "credits", 4)
    assert alice_event.success and b_event.success
    assert alice_event.usage_event_id and b_event.usage_event_id
    return World(
        backend,
        database_url,
        a,
        b,
        pack.access_source_id,
        bob_free,
        alice_event.usage_event_id,
        b_event.usage_event_id,
    )


# --- what "nothing changed" means ------------------------------------------------------


def balances(world: World) -> dict[str, Any]:
    """Every customer's entitlements and usage keys, as the embedded API shows them."""
    seen: dict[str, Any] = {}
    for label, app, customer in (
        ("A/alice", world.a, "alice"),
        ("A/bob", world.a, "bob"),
        ("B/alice", world.b, "alice"),
    ):
        state = app.state(customer)
        seen[label] = (
            sorted((e.entitlement_id, e.access_source_id, e.remaining) for e in state.entitlements),
            [(k.key_id, k.remaining) for k in state.usage_keys],
        )
    return seen


def rows(world: World) -> dict[str, Any]:
    """What is stored for both apps: grant balances and how many rows of each kind."""
    with world.backend.database.read() as conn:

        def count(table: Any) -> int:
            query = select(func.count()).where(table.c.app_id.in_(world.app_ids))
            return int(conn.execute(query).scalar_one())

        grant_rows = conn.execute(
            select(grants.c.id, grants.c.balance, grants.c.status).where(
                grants.c.app_id.in_(world.app_ids)
            )
        )
        return {
            "grants": sorted(tuple(r) for r in grant_rows),
            "ledger_entries": count(ledger_entries),
            "customers": count(customers),
            "access_sources": count(access_sources),
            "reversals": count(reversals),
            "usage_events": count(usage_events),
        }


@dataclass
class Snapshot:
    balances: dict[str, Any]
    rows: dict[str, Any]


def snapshot(world: World) -> Snapshot:
    return Snapshot(balances(world), rows(world))


def assert_nothing_changed(world: World, before: Snapshot, *, refusals_recorded: int = 0) -> None:
    """Balances and ledger as before. A refusal is recorded as a usage event (an answer
    like any other); an input error records nothing at all."""
    after = snapshot(world)
    assert after.balances == before.balances
    expected_rows = dict(before.rows)
    expected_rows["usage_events"] += refusals_recorded
    assert after.rows == expected_rows
    for app_id in world.app_ids:
        assert_verified(world.backend, app_id)


# --- the embedded API --------------------------------------------------------------------

BAD_VALUES = [
    pytest.param(-1, id="negative"),
    pytest.param(0, id="zero"),
    pytest.param(1.5, id="fractional-float"),
    pytest.param(5.0, id="integral-float"),
    pytest.param("5", id="string"),
    pytest.param(True, id="boolean-true"),
    pytest.param(False, id="boolean-false"),
    pytest.param(None, id="none"),
    pytest.param(2**53, id="over-max"),
    pytest.param(10**30, id="huge"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="infinity"),
    pytest.param([1], id="list"),
]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("tracked_id", ["credits", "monthly_credits"])
def test_track_refuses_bad_values(world: World, value: Any, tracked_id: str) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.track("alice", tracked_id, value)
    assert raised.value.code is ErrorCode.INVALID_VALUE
    assert raised.value.field == "value"
    with pytest.raises(RevenipeError) as raised:
        world.a.check("alice", tracked_id, value)
    assert raised.value.code is ErrorCode.INVALID_VALUE
    assert_nothing_changed(world, before)


def test_bad_value_for_a_new_customer_creates_nobody(world: World) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.track("carol", "credits", 1.5)
    assert raised.value.code is ErrorCode.INVALID_VALUE
    with pytest.raises(RevenipeError) as raised:
        world.a.state("carol")
    assert raised.value.code is ErrorCode.CUSTOMER_NOT_FOUND
    assert_nothing_changed(world, before)


def test_the_largest_amount_is_a_value_not_an_error(world: World) -> None:
    """2**53-1 is in range: an answer (insufficient balance), not an input error."""
    before = snapshot(world)
    result = world.a.track("alice", "credits", MAX_AMOUNT)
    assert (result.success, result.error, result.requested, result.consumed) == (
        False,
        RefusalCode.INSUFFICIENT_BALANCE,
        MAX_AMOUNT,
        0,
    )
    assert result.remaining == 145
    assert_nothing_changed(world, before, refusals_recorded=1)


@pytest.mark.parametrize(
    "tracked_id",
    [
        pytest.param("UPPER", id="upper-case"),
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("id with space", id="space"),
        pytest.param("credits\n", id="newline"),
        pytest.param("crédits", id="non-ascii"),
        pytest.param(None, id="none"),
        pytest.param(5, id="int"),
    ],
)
def test_track_refuses_malformed_ids(world: World, tracked_id: Any) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.track("alice", tracked_id, 1)
    assert raised.value.code is ErrorCode.INVALID_ID
    assert raised.value.field == "id"  # `App.track`'s own name for it
    with pytest.raises(RevenipeError) as raised:
        world.a.check("alice", tracked_id, 1)
    assert raised.value.code is ErrorCode.INVALID_ID
    assert raised.value.field == "id"
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    ("tracked_id", "refusal"),
    [
        pytest.param("no_such_credits", RefusalCode.UNKNOWN_ENTITLEMENT, id="unknown"),
        pytest.param("a" * 64, RefusalCode.UNKNOWN_ENTITLEMENT, id="unknown-64-chars"),
        pytest.param("pack_50", RefusalCode.UNKNOWN_ENTITLEMENT, id="a-product-id"),
        pytest.param("export_hd", RefusalCode.NOT_METERED, id="boolean"),
    ],
)
def test_track_refuses_ids_it_cannot_consume(
    world: World, tracked_id: str, refusal: RefusalCode
) -> None:
    before = snapshot(world)
    result = world.a.track("alice", tracked_id, 1)
    assert result.success is False
    assert result.error == refusal
    assert (result.requested, result.consumed, result.entitlement_id) == (1, 0, tracked_id)
    check = world.a.check("alice", tracked_id, 1)
    assert (check.would_succeed, check.error, check.draws) == (False, refusal, ())
    assert_nothing_changed(world, before, refusals_recorded=1)


def test_unknown_access_source_is_refused(world: World) -> None:
    before = snapshot(world)
    result = world.a.track("alice", "credits", 1, access_source_id="src_does_not_exist")
    assert (result.success, result.error, result.consumed) == (
        False,
        RefusalCode.UNKNOWN_ACCESS_SOURCE,
        0,
    )
    assert_nothing_changed(world, before, refusals_recorded=1)


def test_access_source_of_another_customer_is_refused_like_an_unknown_one(world: World) -> None:
    """Naming bob's source while tracking for alice: the same answer as a source that
    does not exist (nothing about bob leaks, not even his balance), nothing consumed."""
    before = snapshot(world)
    unknown = world.a.track("alice", "credits", 1, access_source_id="src_does_not_exist")
    foreign = world.a.track("alice", "credits", 1, access_source_id=world.bob_free_source)
    for_bob = world.a.track("bob", "credits", 1, access_source_id=world.alice_pack_source)

    def answer(result: revenipe.TrackResult) -> dict[str, Any]:
        return {k: v for k, v in track_result_to_wire(result).items() if k != "access_source_id"}

    assert answer(foreign) == answer(unknown)
    assert answer(for_bob) == answer(unknown)
    assert foreign.error == RefusalCode.UNKNOWN_ACCESS_SOURCE
    assert foreign.remaining == 0
    check = world.a.check("alice", "credits", 1, access_source_id=world.bob_free_source)
    assert (check.would_succeed, check.error, check.available) == (
        False,
        RefusalCode.UNKNOWN_ACCESS_SOURCE,
        0,
    )
    assert_nothing_changed(world, before, refusals_recorded=3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"access_source_id": ""}, "access_source_id", id="empty-source"),
        pytest.param({"access_source_id": "s" * 65}, "access_source_id", id="long-source"),
        pytest.param({"access_source_id": 7}, "access_source_id", id="int-source"),
        pytest.param({"idempotency_key": ""}, "idempotency_key", id="empty-key"),
        pytest.param({"idempotency_key": "k" * 256}, "idempotency_key", id="long-key"),
        pytest.param({"idempotency_key": "a\x00b"}, "idempotency_key", id="control-char-key"),
    ],
)
def test_track_refuses_malformed_source_and_key(
    world: World, kwargs: dict[str, Any], field: str
) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.track("alice", "credits", 1, **kwargs)
    assert raised.value.code is ErrorCode.INVALID_ID
    assert raised.value.field == field
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 257, id="257-chars"),
        pytest.param(None, id="none"),
        pytest.param("al\x07ice", id="control-char"),
    ],
)
def test_track_refuses_malformed_customer(world: World, customer: Any) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.track(customer, "credits", 1)
    assert raised.value.code is ErrorCode.INVALID_ID
    assert_nothing_changed(world, before)


@pytest.mark.parametrize("app_id", ["app_does_not_exist", "", "APP WITH SPACE", None, 42])
def test_unknown_app_is_an_error(world: World, app_id: Any) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.backend.app(app_id)
    assert raised.value.code is ErrorCode.APP_NOT_FOUND
    assert_nothing_changed(world, before)


@pytest.mark.parametrize("app_id", ["app_does_not_exist", ""])
def test_verify_of_an_unknown_app_is_an_error(world: World, app_id: str) -> None:
    """Like `revenipe verify --app X`: a typo must not read as "ok, 0 grants checked"
    (and "" must not silently mean "every app")."""
    with pytest.raises(RevenipeError) as raised:
        world.backend.verify(app_id)
    assert raised.value.code is ErrorCode.APP_NOT_FOUND


def test_apps_are_isolated(world: World) -> None:
    """'alice' in A and 'alice' in B are two customers with separate balances."""
    a_alice = world.a.state("alice")
    b_alice = world.b.state("alice")
    assert a_alice.customer.id != b_alice.customer.id
    assert {k.key_id: k.remaining for k in a_alice.usage_keys}["credits"] == 145
    assert {k.key_id: k.remaining for k in b_alice.usage_keys}["credits"] == 96
    a_before = balances(world)["A/alice"]

    result = world.b.track("alice", "credits", 30)
    assert result.success and result.remaining == 66
    assert result.customer_id == b_alice.customer.id
    assert balances(world)["A/alice"] == a_before

    # A's sources, events and customers do not exist from B.
    before = snapshot(world)
    foreign = world.b.track("alice", "credits", 1, access_source_id=world.alice_pack_source)
    assert (foreign.success, foreign.error) == (False, RefusalCode.UNKNOWN_ACCESS_SOURCE)
    with pytest.raises(RevenipeError) as raised:
        world.b.reverse(world.alice_event)
    assert raised.value.code is ErrorCode.USAGE_EVENT_NOT_FOUND
    with pytest.raises(RevenipeError) as raised:
        world.b.state("bob")
    assert raised.value.code is ErrorCode.CUSTOMER_NOT_FOUND
    with pytest.raises(RevenipeError) as raised:
        world.b.check("bob", "credits", 1)
    assert raised.value.code is ErrorCode.CUSTOMER_NOT_FOUND
    assert_nothing_changed(world, before, refusals_recorded=1)

    # An idempotency key used in A means nothing in B.
    first = world.a.track("alice", "credits", 2, idempotency_key="shared-key")
    second = world.b.track("alice", "credits", 3, idempotency_key="shared-key")
    assert first.success and second.success and not second.replayed
    assert (first.remaining, second.remaining) == (143, 63)
    for app_id in world.app_ids:
        assert_verified(world.backend, app_id)


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        pytest.param(6, ErrorCode.REVERSAL_EXCEEDS_CONSUMED, id="more-than-consumed"),
        pytest.param(MAX_AMOUNT, ErrorCode.REVERSAL_EXCEEDS_CONSUMED, id="max"),
        pytest.param(0, ErrorCode.INVALID_VALUE, id="zero"),
        pytest.param(-1, ErrorCode.INVALID_VALUE, id="negative"),
        pytest.param(2.0, ErrorCode.INVALID_VALUE, id="float"),
        pytest.param("1", ErrorCode.INVALID_VALUE, id="string"),
        pytest.param(True, ErrorCode.INVALID_VALUE, id="boolean"),
    ],
)
def test_bad_reversals(world: World, amount: Any, code: ErrorCode) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.reverse(world.alice_event, amount)
    assert raised.value.code is code
    assert_nothing_changed(world, before)


def test_reversal_cannot_exceed_what_is_left(world: World) -> None:
    partial = world.a.reverse(world.alice_event, 3)
    assert (partial.amount, partial.total_reversed) == (3, 3)
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.reverse(world.alice_event, 3)
    assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
    refused = world.a.track("alice", "credits", 10**6)
    assert not refused.success and refused.usage_event_id
    with pytest.raises(RevenipeError) as raised:
        world.a.reverse(refused.usage_event_id, 1)
    assert raised.value.code is ErrorCode.REVERSAL_EXCEEDS_CONSUMED
    assert_nothing_changed(world, before, refusals_recorded=1)


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("use_does_not_exist", id="unknown"),
        pytest.param("b_event", id="other-app"),
    ],
)
def test_reversal_of_unknown_or_foreign_event(world: World, event_id: str) -> None:
    event_id = world.b_event if event_id == "b_event" else event_id
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        world.a.reverse(event_id)
    assert raised.value.code is ErrorCode.USAGE_EVENT_NOT_FOUND
    with pytest.raises(RevenipeError) as raised:
        world.a.reverse(event_id, 1)
    assert raised.value.code is ErrorCode.USAGE_EVENT_NOT_FOUND
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    ("tracked_id", "value", "on_pack"),
    [
        pytest.param("credits", 2, False, id="other-value"),
        pytest.param("monthly_credits", 1, False, id="other-id"),
        pytest.param("credits", 1, True, id="other-access-source"),
    ],
)
def test_idempotency_key_reused_with_another_body(
    world: World, tracked_id: str, value: int, on_pack: bool
) -> None:
    original = world.a.track("alice", "credits", 1, idempotency_key="order-1")
    assert original.success
    before = snapshot(world)
    source = world.alice_pack_source if on_pack else None
    with pytest.raises(RevenipeError) as raised:
        world.a.track(
            "alice", tracked_id, value, access_source_id=source, idempotency_key="order-1"
        )
    assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert raised.value.field == "idempotency_key"
    replay = world.a.track("alice", "credits", 1, idempotency_key="order-1")
    assert replay.replayed and track_result_to_wire(replay) == track_result_to_wire(original)
    assert replay.usage_event_id == original.usage_event_id
    assert_nothing_changed(world, before)
    # Keys are scoped to the customer: bob may use the same key for his own track.
    for_bob = world.a.track("bob", "credits", 2, idempotency_key="order-1")
    assert for_bob.success and not for_bob.replayed


@pytest.mark.parametrize(
    ("call", "code"),
    [
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", 0),
            ErrorCode.INVALID_VALUE,
            id="zero-amount",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", 2.5),
            ErrorCode.INVALID_VALUE,
            id="float-amount",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", None),
            ErrorCode.INVALID_VALUE,
            id="no-amount-for-metered",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", 2**53),
            ErrorCode.INVALID_VALUE,
            id="over-max-amount",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "export_hd", 5),
            ErrorCode.INVALID_VALUE,
            id="amount-for-boolean",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "no_such", 5),
            ErrorCode.ENTITLEMENT_NOT_FOUND,
            id="unknown-entitlement",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "credits", 5),
            ErrorCode.ENTITLEMENT_NOT_FOUND,
            id="usage-key-is-not-an-entitlement",
        ),
        pytest.param(
            lambda a: a.grant_product("alice", "no_such"),
            ErrorCode.PRODUCT_NOT_FOUND,
            id="unknown-product",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", 5, priority=True),
            ErrorCode.INVALID_ARGUMENT,
            id="boolean-priority",
        ),
        pytest.param(
            lambda a: a.grant_entitlement("alice", "purchased_credits", 5, priority=10**7),
            ErrorCode.INVALID_ARGUMENT,
            id="priority-out-of-range",
        ),
        pytest.param(
            lambda a: a.grant_product("alice", "pack_50", priority=1.5),
            ErrorCode.INVALID_ARGUMENT,
            id="float-priority",
        ),
        pytest.param(
            lambda a: a.grant_entitlement(
                "alice", "purchased_credits", 5, expires_at=datetime(2030, 1, 1)
            ),
            ErrorCode.INVALID_ARGUMENT,
            id="naive-expiry",
        ),
        pytest.param(
            lambda a: a.grant_entitlement(
                "alice", "purchased_credits", 5, expires_at="2030-01-01T00:00:00Z"
            ),
            ErrorCode.INVALID_ARGUMENT,
            id="string-expiry",
        ),
    ],
)
def test_bad_grants(world: World, call: Callable[[revenipe.App], Any], code: ErrorCode) -> None:
    before = snapshot(world)
    with pytest.raises(RevenipeError) as raised:
        call(world.a)
    assert raised.value.code is code
    assert_nothing_changed(world, before)


# --- the CLI ------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`revenipe ARGV` in-process: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse rejects what it cannot parse
        status = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return status, out, err


def cli_track(world: World, *extra: str, app_id: str | None = None) -> list[str]:
    return [
        "track",
        "--database-url",
        world.url,
        "--app",
        app_id or world.a.app_id,
        "--customer",
        "alice",
        *extra,
        "--json",
    ]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param("-1", "invalid_value", id="negative"),
        pytest.param("0", "invalid_value", id="zero"),
        pytest.param("-0", "invalid_value", id="minus-zero"),
        pytest.param(str(2**53), "invalid_value", id="over-max"),
        pytest.param(str(10**30), "invalid_value", id="huge"),
    ],
)
def test_cli_track_bad_value_in_range_check(
    world: World, capsys: pytest.CaptureFixture[str], value: str, code: str
) -> None:
    before = snapshot(world)
    status, out, err = run_cli(capsys, *cli_track(world, "--id", "credits", f"--value={value}"))
    assert status == 2
    assert out == ""
    problem = json.loads(err)
    assert problem["code"] == code
    assert "value" in problem["message"]
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1.5", id="fractional"),
        pytest.param("5.0", id="integral-float"),
        pytest.param("five", id="word"),
        pytest.param("true", id="boolean"),
        pytest.param("", id="empty"),
        pytest.param("1e3", id="exponent"),
        pytest.param("--5", id="double-minus"),
        pytest.param("0x10", id="hex"),
        pytest.param(" 5", id="leading-space"),
        pytest.param("\uff15", id="fullwidth-digit"),
    ],
)
def test_cli_track_value_that_is_not_an_integer(
    world: World, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    before = snapshot(world)
    status, out, err = run_cli(capsys, *cli_track(world, "--id", "credits", f"--value={value}"))
    assert status == 2
    assert out == ""
    assert "argument --value" in err
    assert_nothing_changed(world, before)


def test_cli_track_without_value(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(world)
    status, out, err = run_cli(capsys, *cli_track(world, "--id", "credits"))
    assert status == 2 and out == ""
    assert "--value" in err and "required" in err
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    ("tracked_id", "code"),
    [
        pytest.param("UPPER", "invalid_id", id="upper-case"),
        pytest.param("", "invalid_id", id="empty"),
        pytest.param("a" * 65, "invalid_id", id="65-chars"),
        pytest.param("id with space", "invalid_id", id="space"),
    ],
)
def test_cli_track_malformed_id(
    world: World, capsys: pytest.CaptureFixture[str], tracked_id: str, code: str
) -> None:
    before = snapshot(world)
    status, out, err = run_cli(capsys, *cli_track(world, f"--id={tracked_id}", "--value", "1"))
    assert status == 2 and out == ""
    problem = json.loads(err)
    assert problem["code"] == code
    assert problem["message"].startswith("id must be")  # the CLI's `--id`
    assert_nothing_changed(world, before)


def test_cli_error_without_json_is_one_readable_line(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = cli_track(world, "--id", "UPPER", "--value", "1")[:-1]  # no --json
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("error (invalid_id): id must be")


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        pytest.param(["--id", "no_such_credits"], "unknown_entitlement", id="unknown-id"),
        pytest.param(["--id", "export_hd"], "not_metered", id="boolean"),
        pytest.param(
            ["--id", "credits", "--access-source-id", "src_does_not_exist"],
            "unknown_access_source",
            id="unknown-source",
        ),
        pytest.param(
            ["--id", "credits", "--access-source-id", "BOB"],
            "unknown_access_source",
            id="other-customers-source",
        ),
        pytest.param(
            ["--id", "credits", "--value", str(MAX_AMOUNT)],
            "insufficient_balance",
            id="insufficient",
        ),
    ],
)
def test_cli_refusals_exit_0_with_success_false(
    world: World, capsys: pytest.CaptureFixture[str], extra: list[str], refusal: str
) -> None:
    extra = [world.bob_free_source if arg == "BOB" else arg for arg in extra]
    if "--value" not in extra:
        extra += ["--value", "1"]
    before = snapshot(world)
    status, out, err = run_cli(capsys, *cli_track(world, *extra))
    assert status == 0, err
    assert err == ""
    answer = json.loads(out)
    assert answer["success"] is False
    assert answer["error"] == refusal
    assert answer["consumed"] == 0
    if refusal == "unknown_access_source":
        assert answer["remaining"] == 0
    assert_nothing_changed(world, before, refusals_recorded=1)


def test_cli_unknown_app(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(world)
    for argv in (
        cli_track(world, "--id", "credits", "--value", "1", app_id="app_does_not_exist"),
        ["verify", "--database-url", world.url, "--app", "app_does_not_exist", "--json"],
        [
            "customers",
            "show",
            "--database-url",
            world.url,
            "--app",
            "app_does_not_exist",
            "--customer",
            "alice",
            "--json",
        ],
    ):
        status, out, err = run_cli(capsys, *argv)
        assert status == 2 and out == "", argv
        assert json.loads(err)["code"] == "app_not_found"
    assert_nothing_changed(world, before)


def test_cli_customer_of_another_app(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    a_before = balances(world)["A/alice"]
    status, out, _ = run_cli(
        capsys, *cli_track(world, "--id", "credits", "--value", "30", app_id=world.b.app_id)
    )
    assert status == 0
    assert json.loads(out)["remaining"] == 66
    assert balances(world)["A/alice"] == a_before
    before = snapshot(world)
    status, out, err = run_cli(
        capsys,
        "customers",
        "show",
        "--database-url",
        world.url,
        "--app",
        world.b.app_id,
        "--customer",
        "bob",
        "--json",
    )
    assert status == 2 and out == ""
    assert json.loads(err)["code"] == "customer_not_found"
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    ("event", "amount", "code"),
    [
        pytest.param("b_event", None, "usage_event_not_found", id="other-app"),
        pytest.param("use_does_not_exist", None, "usage_event_not_found", id="unknown"),
        pytest.param("a_event", "6", "reversal_exceeds_consumed", id="more-than-consumed"),
        pytest.param("a_event", "0", "invalid_value", id="zero"),
    ],
)
def test_cli_bad_reversals(
    world: World,
    capsys: pytest.CaptureFixture[str],
    event: str,
    amount: str | None,
    code: str,
) -> None:
    event_id = {"b_event": world.b_event, "a_event": world.alice_event}.get(event, event)
    before = snapshot(world)
    argv = ["reverse", "--database-url", world.url, "--app", world.a.app_id]
    argv += ["--usage-event", event_id, "--json"]
    if amount is not None:
        argv += ["--amount", amount]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and out == ""
    assert json.loads(err)["code"] == code
    assert_nothing_changed(world, before)


def test_cli_idempotency_key_reused_with_another_body(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    status, first, _ = run_cli(
        capsys, *cli_track(world, "--id", "credits", "--value", "1", "--idempotency-key", "k1")
    )
    assert status == 0 and json.loads(first)["success"] is True
    before = snapshot(world)
    status, out, err = run_cli(
        capsys, *cli_track(world, "--id", "credits", "--value", "2", "--idempotency-key", "k1")
    )
    assert status == 2 and out == ""
    assert json.loads(err)["code"] == "idempotency_key_reused"
    assert_nothing_changed(world, before)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        pytest.param(["--entitlement", "purchased_credits"], "invalid_value", id="no-amount"),
        pytest.param(
            ["--entitlement", "purchased_credits", "--amount", "-3"],
            "invalid_value",
            id="negative-amount",
        ),
        pytest.param(
            ["--entitlement", "purchased_credits", "--amount", "2.5"],
            "--amount",
            id="float-amount",
        ),
        pytest.param(
            ["--entitlement", "export_hd", "--amount", "5"], "invalid_value", id="boolean-amount"
        ),
        pytest.param(
            ["--entitlement", "no_such", "--amount", "5"],
            "entitlement_not_found",
            id="unknown-entitlement",
        ),
        pytest.param(["--product", "no_such"], "product_not_found", id="unknown-product"),
        pytest.param(
            ["--product", "pack_50", "--amount", "5"], "invalid_argument", id="amount-on-product"
        ),
        pytest.param(
            ["--product", "pack_50", "--entitlement", "purchased_credits"],
            "not allowed with",
            id="both",
        ),
        pytest.param(
            ["--product", "pack_50", "--expires-at", "2030-01-01T00:00:00"],
            "time zone",
            id="naive-expiry",
        ),
        pytest.param(
            ["--product", "pack_50", "--expires-at", "next week"], "ISO-8601", id="bad-expiry"
        ),
        pytest.param(
            ["--product", "pack_50", "--priority", "9999999"],
            "invalid_argument",
            id="priority-out-of-range",
        ),
    ],
)
def test_cli_bad_grants(
    world: World, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    before = snapshot(world)
    argv = ["grant", "--database-url", world.url, "--app", world.a.app_id]
    status, out, err = run_cli(capsys, *argv, "--customer", "alice", *extra, "--json")
    assert status == 2 and out == ""
    assert needle in err
    assert_nothing_changed(world, before)


def test_cli_bad_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(
        capsys, "verify", "--database-url", "mysql://root@localhost/revenipe", "--json"
    )
    assert status == 2 and out == ""
    problem = json.loads(err)
    assert problem["code"] == "invalid_argument"
    assert "mysql" in problem["message"]


def test_expired_access_is_refused_not_an_error(world: World) -> None:
    """A grant that expired: `access_expired`, nothing consumed (and not `no_access`)."""
    past = datetime.now(UTC) - timedelta(days=1)
    world.a.grant_entitlement("erin", "purchased_credits", 5, expires_at=past)
    before = snapshot(world)
    result = world.a.track("erin", "purchased_credits", 1)
    assert (result.success, result.error, result.consumed, result.remaining) == (
        False,
        RefusalCode.ACCESS_EXPIRED,
        0,
        0,
    )
    never = world.a.track("erin", "bonus_credits", 1)
    assert (never.success, never.error) == (False, RefusalCode.NO_ACCESS)
    assert_nothing_changed(world, before, refusals_recorded=2)
