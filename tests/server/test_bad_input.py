"""Bad input over HTTP: the client track, the server API's track and its grants.

Every bad request is a 4xx (never a 5xx) whose JSON body has `code` and `message`, and
it changes nothing: same rows, same grant balances, ledger invariants intact. A track
that is understood but cannot be honoured (no such entitlement, a boolean one) is not
bad input: it is a 200 answer with `success: false`, and it spends nothing either.

Each table runs in one test per database (building a server per case would be slow);
every case is checked and all failures are reported together, by case name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import World, assert_error, assert_unchanged, fingerprint, ok, snapshot

ALICE = object()
"""Stands for alice's internal id in a client track body."""
DROP = object()
"""Removes a field from the base body."""
ALICE_TEXT = "<alice>"
"""Stands for alice's internal id in a raw body."""
RAW = "\x00raw\x00"
"""A value spliced into the JSON text as is (for NaN, huge numbers...)."""
MAX_BODY = 64 * 1024
MAX_AMOUNT = 2**53 - 1

Target = str  # "client_track" | "api_track" | "api_grant"
BASES: dict[Target, dict[str, Any]] = {
    "client_track": {"client_id": ALICE, "entitlement_id": "credits", "value": 1},
    "api_track": {"id": "credits", "value": 1},
    "api_grant": {"entitlement_id": "purchased_credits", "amount": 5},
}
AMOUNT_FIELD = {"client_track": "value", "api_track": "value", "api_grant": "amount"}


@dataclass(frozen=True)
class Bad:
    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    """Fields set on (or, with DROP, removed from) the target's valid base body."""
    status: int | tuple[int, ...] = 400
    code: str | None = None
    raw: str | None = None
    """Spliced for RAW in the JSON text."""
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    """The whole body, as bytes (or a generator: sent chunked), instead of JSON."""
    headers: dict[str, str] = field(default_factory=dict)
    customer: str = "alice"
    """The external id in the server API's path (URL-encoded when sent)."""


def amount_cases(target: Target) -> list[Bad]:
    name = AMOUNT_FIELD[target]
    values: list[tuple[str, Any]] = [
        ("a string", "5"),
        ("a float", 5.0),
        ("a fraction", 1.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("negative", -1),
        ("zero", 0),
        ("2**53", 2**53),
        ("10**30", 10**30),
        ("-(10**30)", -(10**30)),
        ("a list", []),
        ("an object", {}),
        ("a list of 5", [5]),
    ]
    cases = [Bad(f"{name} {label}", {name: v}, code="invalid_value") for label, v in values]
    cases += [
        Bad(f"{name} NaN", {name: RAW}, raw="NaN", code="invalid_value"),
        Bad(f"{name} Infinity", {name: RAW}, raw="Infinity", code="invalid_value"),
        Bad(f"{name} 1e400", {name: RAW}, raw="1e400", code="invalid_value"),
        Bad(f"{name} 5e0", {name: RAW}, raw="5e0", code="invalid_value"),
        Bad(f"{name} with 5000 digits", {name: RAW}, raw="9" * 5000),
        Bad(f"{name} missing", {name: DROP}, code="invalid_value"),
    ]
    return cases


def id_cases(
    field_name: str,
    *,
    catalog: bool,
    max_length: int = 64,
    status: int | tuple[int, ...] = 400,
) -> list[Bad]:
    """Malformed ids in `field_name`. Catalog ids are `[a-z0-9_.-]{1,64}`; other ids
    are any text without control characters."""
    values: list[tuple[str, Any]] = [
        (f"{max_length + 1} chars", "a" * (max_length + 1)),
        ("300 chars", "a" * 300),
        ("empty", ""),
        ("a number", 5),
        ("a list", ["credits"]),
        ("an object", {"id": "credits"}),
        ("a newline", "credits\n"),
        ("a NUL", "cred\x00its"),
        ("a control character", "cred\x1bits"),
    ]
    if catalog:
        values += [
            ("a space", "cred its"),
            ("uppercase", "Credits"),
            ("unicode", "crédits"),
            ("a right-to-left override", "\u202ecredits"),
            ("an emoji", "credits🙂"),
        ]
    return [Bad(f"{field_name} {label}", {field_name: v}, status=status) for label, v in values]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def chunks() -> Iterator[bytes]:
    """Over 64 KiB, sent without a Content-Length (chunked)."""
    for _ in range(80):
        yield b" " * 1024
    yield b"{}"


def body_cases(target: Target) -> list[Bad]:
    valid = json.dumps({k: ALICE_TEXT if v is ALICE else v for k, v in BASES[target].items()})
    json_type = {"content-type": "application/json"}
    return [
        Bad("body not JSON", content=b"{value: 1}", headers=json_type),
        Bad("body truncated JSON", content=valid[:-3].encode(), headers=json_type),
        Bad("body empty", content=b"", headers=json_type),
        Bad("body a JSON array", content=f"[{valid}]".encode(), headers=json_type),
        Bad("body a JSON string", content=b'"credits"', headers=json_type),
        Bad("body a JSON number", content=b"1", headers=json_type),
        Bad("body JSON null", content=b"null", headers=json_type),
        Bad("body not UTF-8", content=b'{"id": "\xff\xfe"}', headers=json_type),
        Bad("body nested 30000 deep", content=nested(30000), headers=json_type),
        Bad(
            "body 100000 x '['",
            content=b"[" * 100_000,
            headers=json_type,
            status=413,
            code="body_too_large",
        ),
        Bad(
            "body over 64 KiB",
            content=valid.encode() + b" " * MAX_BODY,
            headers=json_type,
            status=413,
            code="body_too_large",
        ),
        Bad(
            "content type text/plain",
            content=valid.encode(),
            headers={"content-type": "text/plain"},
        ),
        Bad(
            "content type form",
            content=b"id=credits&value=1",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        Bad(
            "content type multipart",
            content=b"--x\r\n\r\n--x--\r\n",
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
    ]


def idempotency_cases() -> list[Bad]:
    return [
        Bad("Idempotency-Key 256 chars", headers={"Idempotency-Key": "k" * 256}),
        Bad("Idempotency-Key 1000 chars", headers={"Idempotency-Key": "k" * 1000}),
        Bad("Idempotency-Key empty", headers={"Idempotency-Key": ""}),
    ]


CLIENT_TRACK_CASES = [
    *amount_cases("client_track"),
    *id_cases("entitlement_id", catalog=True),
    *id_cases("access_source_id", catalog=False),
    Bad("client_id 65 chars", {"client_id": "c" * 65}),
    Bad("client_id empty", {"client_id": ""}),
    Bad("client_id a number", {"client_id": 5}),
    Bad("client_id null", {"client_id": None}),
    Bad("client_id missing", {"client_id": DROP}),
    Bad("client_id with a space", {"client_id": "cus x"}, status=(400, 403)),
    Bad("client_id uppercase", {"client_id": "CUS_X"}, status=(400, 403)),
    Bad("entitlement_id missing", {"entitlement_id": DROP}),
    Bad("entitlement_id null", {"entitlement_id": None}),
    *body_cases("client_track"),
    *idempotency_cases(),
]

API_TRACK_CASES = [
    *amount_cases("api_track"),
    *id_cases("id", catalog=True),
    *id_cases("access_source_id", catalog=False),
    Bad("id missing", {"id": DROP}),
    Bad("unknown field", {"extra": 1}),
    Bad("unknown field entitlement_id", {"entitlement_id": "credits"}),
    Bad("unknown field client_id", {"client_id": "alice"}),
    Bad("customer 257 chars", customer="c" * 257, code="invalid_id"),
    Bad("customer 300 chars", customer="c" * 300, code="invalid_id"),
    Bad("customer empty", customer="", status=(400, 404, 405)),
    Bad("customer a newline", customer="alice\n", code="invalid_id"),
    Bad("customer a NUL", customer="al\x00ice", code="invalid_id"),
    Bad("customer a control character", customer="al\x07ice", code="invalid_id"),
    *body_cases("api_track"),
    *idempotency_cases(),
]

API_GRANT_CASES = [
    *[c for c in amount_cases("api_grant") if c.name != "amount missing"],
    Bad("metered entitlement without amount", {"amount": DROP}, code="invalid_value"),
    # A grant looks its id up in the catalog: a malformed one may be "not found" (404).
    *id_cases("entitlement_id", catalog=False, status=(400, 404)),
    *id_cases("product_id", catalog=False, status=(400, 404)),
    Bad(
        "unknown entitlement", {"entitlement_id": "nope"}, status=404, code="entitlement_not_found"
    ),
    Bad("entitlement uppercase", {"entitlement_id": "Purchased_credits"}, status=(400, 404)),
    Bad("entitlement a usage key", {"entitlement_id": "credits"}, status=(400, 404)),
    Bad(
        "unknown product",
        {"entitlement_id": DROP, "amount": DROP, "product_id": "nope"},
        status=404,
        code="product_not_found",
    ),
    Bad("product and entitlement", {"product_id": "pro"}),
    Bad("product with an amount", {"entitlement_id": DROP, "product_id": "pro"}),
    Bad("neither product nor entitlement", {"entitlement_id": DROP, "amount": DROP}),
    Bad("boolean entitlement with an amount", {"entitlement_id": "export_hd"}),
    Bad("unknown field", {"extra": 1}),
    Bad("unknown field customer", {"customer": "bob"}),
    Bad("unknown field value", {"value": 5}),
    Bad("expires_at naive", {"expires_at": "2026-03-01T00:00:00"}),
    Bad("expires_at garbage", {"expires_at": "tomorrow"}),
    Bad("expires_at empty", {"expires_at": ""}),
    Bad("expires_at a number", {"expires_at": 1767225600}),
    Bad("expires_at Feb 30", {"expires_at": "2026-02-30T00:00:00Z"}),
    Bad("expires_at a date only", {"expires_at": "2026-03-01"}),
    Bad("expires_at a newline", {"expires_at": "2026-03-01T00:00:00Z\n"}),
    Bad("expires_at 65 chars", {"expires_at": "2026-03-01T00:00:00" + "0" * 45 + "Z"}),
    Bad("priority 1000001", {"priority": 1_000_001}),
    Bad("priority -1000001", {"priority": -1_000_001}),
    Bad("priority 10**30", {"priority": 10**30}),
    Bad("priority a string", {"priority": "1"}),
    Bad("priority a float", {"priority": 1.0}),
    Bad("priority true", {"priority": True}),
    Bad("customer 300 chars", customer="c" * 300, code="invalid_id"),
    Bad("customer a newline", customer="alice\n", code="invalid_id"),
    Bad("customer a NUL", customer="al\x00ice", code="invalid_id"),
    *body_cases("api_grant"),
]


def request(world: World, target: Target, case: Bad) -> httpx.Response:
    a, alice = world.a, world.a.customers["alice"]
    if target == "client_track":
        path, headers = "/v1/customer/track", a.as_customer("alice")
    else:
        verb = "track" if target == "api_track" else "grants"
        path, headers = f"/v1/customers/{quote(case.customer, safe='')}/{verb}", a.api()
    headers = {**headers, **case.headers}
    if case.content is not None:
        if callable(case.content):
            return world.http.post(path, content=case.content(), headers=headers)
        content = case.content.replace(ALICE_TEXT.encode(), alice.client_id.encode())
        return world.http.post(path, content=content, headers=headers)
    body = dict(BASES[target])
    for key, value in case.changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    body = {k: alice.client_id if v is ALICE else v for k, v in body.items()}
    text = json.dumps(body)
    if case.raw is not None:
        text = text.replace(json.dumps(RAW), case.raw)
    return world.http.post(
        path, content=text.encode(), headers={"content-type": "application/json", **headers}
    )


def run_table(world: World, target: Target, cases: list[Bad]) -> None:
    before = snapshot(world)
    last = fingerprint(world)
    failures = []
    for case in cases:
        try:
            response = request(world, target, case)
            assert response.status_code < 500, f"{response.status_code} {response.text[:200]}"
            assert_error(response, case.status, case.code)
            now = fingerprint(world)
            assert now == last, "the request changed something"
        except AssertionError as exc:
            failures.append(f"{target} / {case.name}: {str(exc).splitlines()[0][:300]}")
            last = fingerprint(world)
    assert_unchanged(world, before)
    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures))


def test_table_is_large() -> None:
    cases = CLIENT_TRACK_CASES + API_TRACK_CASES + API_GRANT_CASES
    assert len(cases) >= 30
    for table in (CLIENT_TRACK_CASES, API_TRACK_CASES, API_GRANT_CASES):
        names = [c.name for c in table]
        assert len(names) == len(set(names)), "case names are unique per table"


def test_client_track_bad_input(world: World) -> None:
    run_table(world, "client_track", CLIENT_TRACK_CASES)


def test_api_track_bad_input(world: World) -> None:
    run_table(world, "api_track", API_TRACK_CASES)


def test_api_grant_bad_input(world: World) -> None:
    run_table(world, "api_grant", API_GRANT_CASES)


def test_the_bases_are_valid(world: World) -> None:
    """The tables change one thing in a valid request: the unchanged one succeeds."""
    assert ok(request(world, "client_track", Bad("valid")))["success"] is True
    assert ok(request(world, "api_track", Bad("valid")))["success"] is True
    assert ok(request(world, "api_grant", Bad("valid")), 201)["grant_ids"]
    # Limits are inclusive: the largest amount, and an Idempotency-Key of 255 characters.
    largest = Bad("largest", {"amount": MAX_AMOUNT})
    assert ok(request(world, "api_grant", largest), 201)["grant_ids"]
    longest_key = Bad("key", headers={"Idempotency-Key": "k" * 255})
    assert ok(request(world, "api_track", longest_key))["success"] is True
    # The client protocol ignores fields it does not know (future clients may add some).
    extra = Bad("extra", {"future_field": {"x": 1}})
    assert ok(request(world, "client_track", extra))["success"] is True


REFUSALS = [
    ("unknown_entitlement", "nope"),
    ("unknown_entitlement", "pro"),  # a product id is not an entitlement
    ("not_metered", "export_hd"),
]


@pytest.mark.parametrize("target", ["client_track", "api_track"])
def test_track_refusals_are_answers(world: World, target: Target) -> None:
    before = snapshot(world)
    field_name = "entitlement_id" if target == "client_track" else "id"
    for error, tracked in REFUSALS:
        result = ok(request(world, target, Bad(error, {field_name: tracked, "value": 3})))
        assert result["success"] is False, result
        assert result["error"] == error, result
        assert result["consumed"] == 0 and result["requested"] == 3, result
        assert result["entitlement_id"] == tracked, result
    # Refusals are recorded as usage events (history), and spend nothing.
    assert_unchanged(world, before, ignore={"A/usage_events"})
    events = ok(world.http.get("/v1/usage_events?customer=alice", headers=world.a.api()))
    assert [e["error"] for e in events["usage_events"]] == [e for e, _ in reversed(REFUSALS)]


# --- known gaps, one test each (see the module's failures for the precise answers) ------


def test_oversized_chunked_body_is_413(world: World) -> None:
    """Over 64 KiB without a Content-Length (chunked): refused like one with it, 413."""
    json_type = {"content-type": "application/json"}
    case = Bad("chunked", content=chunks, headers=json_type, status=413, code="body_too_large")
    failures = []
    for target in BASES:
        try:
            run_table(world, target, [case])
        except pytest.fail.Exception as exc:
            failures.append(str(exc).splitlines()[-1])
    assert not failures, "\n".join(failures)


def test_expires_at_beyond_the_utc_range(world: World) -> None:
    """Valid ISO-8601 with a zone, but instants outside what a UTC datetime can hold."""
    run_table(
        world,
        "api_grant",
        [
            Bad("before year 1 in UTC", {"expires_at": "0001-01-01T00:00:00+01:00"}),
            Bad("after year 9999 in UTC", {"expires_at": "9999-12-31T23:59:59-01:00"}),
        ],
    )


def test_bad_parameters_elsewhere_in_the_server_api(world: World) -> None:
    """Query and path parameters end up in SQL: a NUL must be refused (PostgreSQL cannot
    store one), and so must times that cannot be expressed in UTC; never a 500."""
    a = world.a
    before = snapshot(world)
    failures = []
    for method, path in (
        ("GET", "/v1/usage_events?id=%00"),
        ("GET", "/v1/usage_events?cursor=%00"),
        ("GET", "/v1/usage_events?customer=%00"),
        ("GET", "/v1/customers?cursor=%00"),
        ("GET", "/v1/customers/%00"),
        ("GET", "/v1/ledger?customer=%00"),
        ("DELETE", "/v1/secret_keys/%00"),
        ("POST", "/v1/usage_events/%00/reversals"),
        ("POST", "/v1/customers/%00/tokens"),
        ("GET", "/v1/usage_events?since=0001-01-01T00:00:00%2B01:00"),
        ("GET", "/v1/usage_events?until=9999-12-31T23:59:59-01:00"),
        ("GET", "/v1/usage_events?since=2026-01-01T00:00:00"),
        ("GET", "/v1/ledger?cursor=-1"),
        ("GET", "/v1/ledger?cursor=99999999999999999999999"),
        ("GET", "/v1/ledger?limit=0"),
        ("GET", "/v1/customers?limit=100000"),
    ):
        response = world.http.request(method, path, headers=a.api())
        if response.status_code >= 500:
            failures.append(f"{method} {path}: {response.status_code} {response.text[:100]}")
            continue
        if response.status_code >= 400:
            assert_error(response, response.status_code)
    assert_unchanged(world, before)
    assert not failures, "\n".join(failures)


def test_a_malformed_id_is_named_as_the_request_names_it(world: World) -> None:
    """`invalid_id` names the field the caller sent: `entitlement_id` in the client
    protocol, `id` in the server API, on the lean track path (a plain body) and on
    FastAPI's route (a body with a duplicated key, which the lean path passes on)."""
    a, alice = world.a, world.a.customers["alice"]
    client = alice.client_id
    json_type = {"content-type": "application/json"}
    before = snapshot(world)
    bad = '"UPPER"'
    calls = [
        (
            "entitlement_id",
            "/v1/customer/track",
            a.as_customer("alice"),
            f'{{"client_id": "{client}", "entitlement_id": {bad}, "value": 1}}',
        ),
        (
            "entitlement_id",
            "/v1/customer/track",
            a.as_customer("alice"),
            f'{{"client_id": "{client}", "entitlement_id": "credits", "entitlement_id": {bad},'
            ' "value": 1}',
        ),
        ("id", "/v1/customers/alice/track", a.api(), f'{{"id": {bad}, "value": 1}}'),
        (
            "id",
            "/v1/customers/alice/track",
            a.api(),
            f'{{"id": "credits", "id": {bad}, "value": 1}}',
        ),
        ("id", "/v1/customers/alice/check", a.api(), f'{{"id": {bad}, "value": 1}}'),
        ("id", "/v1/customers/alice/reservations", a.api(), f'{{"id": {bad}, "value": 1}}'),
        (
            "entitlement_id",
            "/v1/customer/reservations",
            a.as_customer("alice"),
            f'{{"client_id": "{client}", "entitlement_id": {bad}, "value": 1}}',
        ),
    ]
    named = []
    for _name, path, headers, body in calls:
        response = world.http.post(path, content=body.encode(), headers={**headers, **json_type})
        error = assert_error(response, 400, "invalid_id")
        named.append((path, error.get("field"), error["message"].split(" ")[0]))
    assert named == [(path, name, name) for name, path, _, _ in calls]
    batch = {"items": [{"customer": "alice", "id": "UPPER", "value": 1, "idempotency_key": "k"}]}
    (outcome,) = ok(world.http.post("/v1/track/batch", json=batch, headers=a.api()))["items"]
    assert (outcome["error"]["code"], outcome["error"]["field"]) == ("invalid_id", "id"), outcome
    assert_unchanged(world, before)
