"""Abuse limits: oversized and deeply nested bodies, very long ids and headers, floods of
anonymous logins and of tracks from one address. Refused early with clear 4xx answers
(413, 400, 429 with Retry-After), while the server stays responsive for everyone else,
and the server API (the app's own backend, by secret key) is never throttled.

The floods run against a real `revenipe serve`, from several loopback addresses
(127.0.0.1 floods, 127.0.0.2 and others are the neighbours), with small limits set
through the environment as an operator would.
"""

from __future__ import annotations

import select
import socket
import statistics
import threading
import time
import uuid
import warnings
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import revenipe
from e2e.harness import TLS, Server, Servers
from reliability.workload import Account, open_accounts
from revenipe.server.app import create_app
from revenipe.server.limits import json_depth_over
from revenipe.server.settings import ServerSettings

from support import DEMO_CATALOG

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN_HEADER = "X-Revenipe-Customer-Token"


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def test_json_depth_is_measured_outside_strings() -> None:
    assert not json_depth_over(b'{"a": [1, {"b": [2]}]}', 4)
    assert json_depth_over(b'{"a": [1, {"b": [2]}]}', 3)
    assert not json_depth_over(b'{"name": "' + b"[" * 100 + b'"}', 3)
    assert not json_depth_over(b'{"name": "\\"' + b"[" * 100 + b'"}', 3)
    assert json_depth_over(b"[" * 33 + b"]" * 33, 32)
    assert not json_depth_over(b"[]" * 1000, 1)


def test_oversized_nested_and_long_inputs_are_refused_early(backend: revenipe.Backend) -> None:
    created = backend.create_app("abused", revenipe.load_catalog(DEMO_CATALOG))
    app = create_app(ServerSettings(database_url=backend.context.db.url), context=backend.context)
    api = {"Authorization": f"Bearer {created.secret_key}", "Content-Type": "application/json"}
    client = {"Authorization": created.app.id, "Content-Type": "application/json"}
    with TestClient(app, raise_server_exceptions=False) as http:
        minted = http.post("/v1/customers/alice/tokens", headers=api).json()
        mine = {**client, TOKEN_HEADER: minted["token"]}
        track = {"client_id": minted["client_id"], "entitlement_id": "credits", "value": 1}

        # Bodies over 64 KiB: declared, or sent in chunks without a length.
        big = b'{"id": "credits", "value": 1, "pad": "' + b"x" * 70_000 + b'"}'
        _assert_error(
            http.post("/v1/customers/alice/track", content=big, headers=api), 413, "body_too_large"
        )
        chunks = iter([big[:40_000], big[40_000:]])
        _assert_error(
            http.post("/v1/customer/track", content=chunks, headers=mine), 413, "body_too_large"
        )

        # Deep nesting, on every surface, whatever the route expects.
        for body in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 40 + b"1" + b"}" * 40):
            for path, headers in (("/v1/customer/track", mine), ("/v1/catalog", api)):
                method = http.put if path == "/v1/catalog" else http.post
                refused = _assert_error(
                    method(path, content=body, headers=headers), 400, "body_too_deep"
                )
                assert "32 levels" in refused["message"]
        # Brackets inside strings are text, not nesting: a legitimate catalog goes through.
        catalog = {"entitlements": [{"id": "e", "name": "[" * 200, "type": "metered"}]}
        assert http.post("/v1/catalog/validate", json=catalog, headers=api).status_code == 200

        # Very long ids, in bodies, paths, headers and queries.
        long_id = "a" * 10_000
        _assert_error(
            http.post("/v1/client/auth", json={"client_id": long_id}, headers=client),
            400,
            "invalid_request",
        )
        _assert_error(
            http.post(
                "/v1/customer/track", json={**track, "entitlement_id": long_id}, headers=mine
            ),
            400,
            "invalid_request",
        )
        _assert_error(
            http.post("/v1/customer/track", json={**track, "client_id": long_id}, headers=mine),
            400,
            "invalid_request",
        )
        _assert_error(
            http.post(
                f"/v1/customers/{long_id}/track", json={"id": "credits", "value": 1}, headers=api
            ),
            400,
            "invalid_id",
        )
        _assert_error(
            http.post(
                "/v1/customer/track", json=track, headers={**mine, "Idempotency-Key": long_id}
            ),
            400,
            "invalid_request",
        )
        _assert_error(
            http.get("/v1/usage_events", params={"customer": "c" * 300}, headers=api),
            400,
            "invalid_request",
        )
        refused = http.post(
            "/v1/customer/track", json=track, headers={**client, TOKEN_HEADER: "rvt1." + long_id}
        )
        assert refused.status_code == 401, refused.text
        # Nothing above was charged: the only usage so far is none.
        state = http.get("/v1/customers/alice", headers=api).json()
        assert {k["key_id"]: k["remaining"] for k in state["usage_keys"]}["credits"] == 100


def _client(server: Server, address: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": server.app_id}
    if token:
        headers[TOKEN_HEADER] = token
    return httpx.Client(
        base_url=server.base_url,
        headers=headers,
        timeout=30,
        verify=TLS,
        transport=httpx.HTTPTransport(local_address=address, verify=TLS),
    )


def _track(http: httpx.Client, account: Account) -> httpx.Response:
    body = {
        "client_id": account.client_id,
        "entitlement_id": "purchased_credits",
        "value": 1,
        "access_source_id": None,
    }
    return http.post("/v1/customer/track", json=body)


def _flood(server: Server, accounts: list[Account], address: str, each: int) -> Counter[str]:
    """One thread per account, `each` tracks as fast as answered, all from `address`;
    answers counted by status (and, for 429s, by which limit said so)."""
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def run(account: Account) -> None:
        with _client(server, address, account.token) as http:
            for _ in range(each):
                response = _track(http, account)
                label = str(response.status_code)
                if response.status_code == 429:
                    body = response.json()
                    assert body["code"] == "rate_limited", body
                    assert int(response.headers["retry-after"]) >= 1, response.headers
                    label += " customer" if "customer" in body["message"] else " address"
                with lock:
                    statuses[label] += 1

    pool = [threading.Thread(target=run, args=(account,)) for account in accounts]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    return statuses


def _exchange(sock: socket.socket, pieces: list[bytes]) -> bytes:
    """Send `pieces` with a pause after each (so that the server reads them apart),
    stopping early if the server answers; then read until it closes or a response ends."""
    for piece in pieces:
        sock.sendall(piece)
        if select.select([sock], [], [], 0.05)[0]:
            break
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_a_large_head_is_refused_however_its_bytes_arrive(servers: Servers) -> None:
    """A 100 kB head read as 60 kB and then 40 kB, on a new connection and after a first
    request on a kept-alive one: 431 every time (the count once restarted when the
    parser began the message, inside the read that had just been counted)."""
    server = servers.start()
    address = urlsplit(server.base_url)
    request = b"GET /v1/health HTTP/1.1\r\nHost: revenipe\r\n"
    huge = request + b"X-Padding: " + b"p" * 100_000 + b"\r\n\r\n"
    for kept_alive in (False, True):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            if kept_alive:
                first = _exchange(sock, [request + b"\r\n"])
                assert first.startswith(b"HTTP/1.1 200 "), first[:200]
            answer = _exchange(sock, [huge[:60_000], huge[60_000:]])
        assert answer.startswith(b"HTTP/1.1 431 "), (kept_alive, answer[:200])
        assert b'"code":"headers_too_large"' in answer.replace(b" ", b""), answer[-200:]
    with httpx.Client(base_url=server.base_url, timeout=10, verify=TLS) as http:
        assert http.get("/v1/health").status_code == 200


@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_a_large_body_sent_with_its_head_is_a_large_body_not_a_large_head(
    servers: Servers,
) -> None:
    """A small head and a 200 kB body in one write, and a head whose blank line is split
    between two writes: the body is refused as a body (413), not counted as head (431)."""
    server = servers.start()
    address = urlsplit(server.base_url)
    body = b"{" + b" " * 200_000 + b"}"
    head = (
        b"POST /v1/customers/alice/track HTTP/1.1\r\nHost: revenipe\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    for pieces in ([head + body], [head[:-3], head[-3:] + body]):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            answer = _exchange(sock, pieces)
        assert answer.startswith(b"HTTP/1.1 413 "), (len(pieces), answer[:200])


@pytest.mark.slow
@pytest.mark.parametrize("e2e_database", ["sqlite"], indirect=True)
def test_floods_are_refused_and_everyone_else_is_served(servers: Servers, figures: object) -> None:
    servers.env.update(
        {
            "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "600",  # 10/s, 100 at once
            "REVENIPE_CLIENT_REQUESTS_PER_MINUTE_PER_CUSTOMER": "240",  # 4/s, 40 at once
            "REVENIPE_ANON_LOGINS_PER_MINUTE_PER_ADDRESS": "20",
        }
    )
    server = servers.start()
    accounts = open_accounts(server, 7, 10_000, "flood")
    flooders, (neighbour, busy, quiet) = accounts[:4], accounts[4:]

    # One address floods tracks, for four customers (so that the address limit bites
    # before theirs); a neighbour on another address tracks meanwhile, unhindered.
    neighbour_ms: list[float] = []
    neighbour_statuses: Counter[int] = Counter()

    def neighbour_tracks() -> None:
        with _client(server, "127.0.0.2", neighbour.token) as http:
            for _ in range(20):
                started = time.perf_counter()
                response = _track(http, neighbour)
                neighbour_ms.append((time.perf_counter() - started) * 1000)
                neighbour_statuses[response.status_code] += 1
                time.sleep(0.05)

    beside = threading.Thread(target=neighbour_tracks)
    beside.start()
    flood = _flood(server, flooders, "127.0.0.1", each=60)
    beside.join(timeout=120)
    assert flood["429 address"] > 0, flood
    assert set(flood) <= {"200", "429 address", "429 customer"}, flood
    # At most the burst (100) plus the refill (10/s) over the flood's seconds.
    assert flood["200"] < 100 + 10 * 30, flood
    assert neighbour_statuses == {200: 20}, neighbour_statuses

    # The server API, from the flooding address, is never throttled.
    with server.api() as api:
        api_statuses = Counter(
            api.post(
                f"/v1/customers/{flooders[0].external_id}/track",
                json={"id": "purchased_credits", "value": 1},
            ).status_code
            for _ in range(150)
        )
    assert api_statuses == {200: 150}, api_statuses

    # One customer floods from a fresh address: its own limit, not its neighbour's.
    per_customer = _flood(server, [busy] * 4, "127.0.0.5", each=20)
    assert per_customer["429 customer"] > 0, per_customer
    assert per_customer["200"] <= 40 + 4 * 30, per_customer
    with _client(server, "127.0.0.5", quiet.token) as http:
        assert _track(http, quiet).status_code == 200

    # Anonymous logins: a flood from one address is cut off; another address logs in.
    anonymous: Counter[int] = Counter()
    with _client(server, "127.0.0.3") as http:
        for _ in range(30):
            login = http.post("/v1/client/auth", json={"client_id": uuid.uuid4().hex})
            anonymous[login.status_code] += 1
            if login.status_code == 429:
                assert int(login.headers["retry-after"]) >= 1
    assert anonymous == {200: 20, 429: 10}, anonymous
    with _client(server, "127.0.0.4") as http:
        assert http.post("/v1/client/auth", json={"client_id": uuid.uuid4().hex}).is_success

    # A refusal is not a charge: the flooders paid for exactly their 200s.
    held = 0
    with server.api() as api:
        for account in flooders:
            state = api.get(f"/v1/customers/{account.external_id}").json()
            held += sum(
                e["remaining"]
                for e in state["entitlements"]
                if e["entitlement_id"] == "purchased_credits"
            )
    assert held == 4 * 10_000 - flood["200"] - 150, (held, flood)

    # A header of 100 kB: refused (431) before it is buffered whole; others are served.
    with httpx.Client(base_url=server.base_url, timeout=10, verify=TLS) as http:
        huge = http.get("/v1/health", headers={"X-Padding": "p" * 100_000})
        _assert_error(huge, 431, "headers_too_large")
        assert http.get("/v1/health").status_code == 200
    assert callable(figures)
    figures(
        flood_answers=dict(flood),
        neighbour_answers=dict(neighbour_statuses),
        neighbour_p50_ms=round(statistics.median(neighbour_ms), 1),
        neighbour_max_ms=round(max(neighbour_ms), 1),
        server_api_answers=dict(api_statuses),
        per_customer_answers=dict(per_customer),
        anonymous_logins=dict(anonymous),
        header_100kB=huge.status_code,
    )
