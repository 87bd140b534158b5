"""The track endpoints' lean path (ADR 0016): plain requests are answered by it, anything
else reaches FastAPI's route with its body intact, and both answer alike."""

from __future__ import annotations

import json
from typing import Any

import pytest

from revenipe.server import lean_track
from server.conftest import TOKEN_HEADER, World, ok


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls the lean path handed to the thread pool (FastAPI's route makes its own)."""
    calls: list[str] = []
    original = lean_track.run_in_threadpool

    async def recording(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func.__name__)
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(lean_track, "run_in_threadpool", recording)
    return calls


def _post(world: World, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return world.http.post(
        path, content=body, headers={"Content-Type": "application/json", **headers}
    )


def test_plain_tracks_take_the_lean_path(world: World, lean_calls: list[str]) -> None:
    a = world.a
    answer = ok(
        _post(world, "/v1/customers/alice/track", b'{"id": "credits", "value": 3}', a.api())
    )
    assert answer["success"] and answer["consumed"] == 3
    alice = a.customers["alice"]
    body = json.dumps({"client_id": alice.client_id, "entitlement_id": "credits", "value": 2})
    answer = ok(_post(world, "/v1/customer/track", body.encode(), a.as_customer("alice")))
    assert answer == {
        "success": True,
        "requested": 2,
        "consumed": 2,
        "remaining": answer["remaining"],
        "entitlement_id": "credits",
        "access_source_id": None,
        "error": None,
    }
    headers = {**a.api(), "Idempotency-Key": "lean-1"}
    first = _post(world, "/v1/customers/alice/track", b'{"id": "credits", "value": 1}', headers)
    again = _post(world, "/v1/customers/alice/track", b'{"id": "credits", "value": 1}', headers)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert lean_calls == ["run"] * 4


@pytest.mark.parametrize(
    ("body", "content_type", "status", "consumed"),
    [
        (b'{"id": "credits", "value": 1, "value": 2}', "application/json", 200, 2),
        (b'{"id": "credits", "value": 2.0}', "application/json", 400, None),
        (b'{"id": "credits", "value": true}', "application/json", 400, None),
        (b'{"id": "credits", "value": 1, "extra": 1}', "application/json", 400, None),
        (b'{"id": "credits", "value": "1"}', "application/json", 400, None),
        (b'{"id": "credits", "value": 0}', "application/json", 400, None),
        (b'{"id": "credits"}', "application/json", 400, None),
        (b'["credits", 1]', "application/json", 400, None),
        (b'{"id": "credits", "value": 1', "application/json", 400, None),
        (b'{"id": "credits", "value": 1}', "text/plain", 400, None),
    ],
)
def test_anything_else_reaches_the_route_with_its_body(
    world: World,
    lean_calls: list[str],
    body: bytes,
    content_type: str,
    status: int,
    consumed: int | None,
) -> None:
    headers = {**world.a.api(), "Content-Type": content_type}
    answer = world.http.post("/v1/customers/alice/track", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    if consumed is not None:  # FastAPI read the very same body: its last `value` won
        assert answer.json()["consumed"] == consumed
    else:
        assert answer.json()["code"] in ("invalid_request", "invalid_value")
    assert lean_calls == []


def test_refusals_after_the_body_answer_as_the_route_does(
    world: World, lean_calls: list[str]
) -> None:
    a, b = world.a, world.b
    plain = b'{"id": "credits", "value": 1}'
    wrong_key = _post(world, "/v1/customers/alice/track", plain, {"Authorization": "Bearer sk_x"})
    assert wrong_key.status_code == 401 and wrong_key.json()["code"] == "invalid_secret_key"
    bob = a.customers["bob"]
    body = json.dumps({"client_id": bob.client_id, "entitlement_id": "credits", "value": 1})
    stolen = _post(world, "/v1/customer/track", body.encode(), a.as_customer("alice"))
    assert stolen.status_code in (401, 403), stolen.text
    other_app = _post(
        world,
        "/v1/customer/track",
        body.encode(),
        {"Authorization": b.app_id, TOKEN_HEADER: b.customers["carol"].token},
    )
    assert other_app.status_code in (401, 403), other_app.text
    reused = {**a.api(), "Idempotency-Key": "lean-2"}
    assert ok(_post(world, "/v1/customers/alice/track", plain, reused))["success"]
    clash = _post(world, "/v1/customers/alice/track", b'{"id": "credits", "value": 2}', reused)
    assert clash.status_code == 409 and clash.json()["code"] == "idempotency_key_reused"
