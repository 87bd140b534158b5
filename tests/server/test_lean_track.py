"""The track endpoints' lean path (ADR 0016): plain requests are answered by it, anything
else reaches FastAPI's route with its body intact, and both answer alike."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from revenipe.server import lean_track
from server.conftest import TOKEN_HEADER, World, ok


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tracks the lean path made: "awaited" from the event loop, "in_thread" in the
    thread pool (authentication had to read the database). FastAPI's route makes its
    own calls."""
    calls: list[str] = []
    in_threadpool = lean_track.run_in_threadpool
    track_async = lean_track.usage_service.track_async

    async def in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("in_thread")
        return await in_threadpool(func, *args, **kwargs)

    async def awaited(*args: Any, **kwargs: Any) -> Any:
        calls.append("awaited")
        return await track_async(*args, **kwargs)

    monkeypatch.setattr(lean_track, "run_in_threadpool", in_thread)
    monkeypatch.setattr(lean_track.usage_service, "track_async", awaited)
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
    assert len(lean_calls) == 4
    # The secret key is in the cache since the first call: no thread-pool hop after it.
    assert lean_calls[2:] == ["awaited", "awaited"]


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


def test_an_unknown_key_is_refused_each_time_before_any_track(
    world: World, lean_calls: list[str]
) -> None:
    plain = b'{"id": "credits", "value": 1}'
    for _ in range(2):
        answer = _post(world, "/v1/customers/alice/track", plain, {"Authorization": "Bearer sk_no"})
        assert answer.status_code == 401 and answer.json()["code"] == "invalid_secret_key"
    # Unknown keys are not cached (guessing must not fill the cache): each one is looked
    # up in the database, in the thread pool, and refused there before any track.
    assert lean_calls == ["in_thread", "in_thread"]


def test_the_lean_answer_is_sent_as_the_route_sends_it(world: World, lean_calls: list[str]) -> None:
    headers = {**world.a.api(), "Idempotency-Key": "bytes-1"}
    answers = []
    for body in (b'{"id": "credits", "value": 1}', b'{"id": "credits", "value": 1, "value": 1}'):
        for _ in range(2):  # the second answer is a replay, with its header
            answers.append(_post(world, "/v1/customers/alice/track", body, headers))
        headers["Idempotency-Key"] = "bytes-2"
    assert len(lean_calls) == 2  # the first two; the duplicated key went to the route
    lean, lean_replay, route, route_replay = answers
    for answer in answers:
        compact = json.dumps(answer.json(), ensure_ascii=False, separators=(",", ":"))
        assert answer.content == compact.encode()
        assert answer.headers["content-length"] == str(len(answer.content))
    assert set(lean.json()) == set(route.json())
    assert lean.headers.keys() == route.headers.keys()
    assert lean_replay.headers.keys() == route_replay.headers.keys()
    assert lean_replay.headers["Idempotent-Replayed"] == "true"
    assert lean_replay.content == lean.content


@pytest.mark.parametrize("customer", ["x" * 257, "a\nb", "a\x00b", "a\x14b"])
def test_a_customer_id_the_service_refuses_is_a_400_on_the_lean_path(
    world: World, lean_calls: list[str], customer: str
) -> None:
    plain = b'{"id": "credits", "value": 1}'
    answer = _post(world, f"/v1/customers/{quote(customer, safe='')}/track", plain, world.a.api())
    assert answer.status_code == 400, answer.text
    body = json.dumps({"client_id": customer, "entitlement_id": "credits", "value": 1}).encode()
    answer = _post(world, "/v1/customer/track", body, world.a.as_customer("alice"))
    assert answer.status_code in (400, 403), answer.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"c","value":2}',
        b'\xef\xbb\xbf{"id":"c","value":2}',  # a UTF-8 byte order mark
        '{"id":"é","value":2}'.encode("utf-16"),
        '{"id":"c","value":2}'.encode("utf-32-le"),
        b'{"id":"\\ud800","value":2}',  # a lone surrogate, escaped
        b'{"id":"\xed\xa0\x80"}',  # a lone surrogate, raw
        b'{"id":"c","id":"d"}',
        b"[1]",
        b"\xff\xfe",
        b"",
        b'{"value":NaN}',
    ],
)
def test_a_body_is_decoded_as_json_loads_decodes_it(body: bytes) -> None:
    """The lean path keeps one decoder rather than making one per body (`json.loads`
    with a hook does): the same values, the same refusals."""

    request = SimpleNamespace(headers={"content-type": "application/json"})

    def decoded(parse: Any) -> Any:
        try:
            return ("fields", parse())
        except lean_track._NotPlain:
            return ("not plain",)

    def with_loads() -> Any:
        try:
            fields = json.loads(body, object_pairs_hook=lean_track._reject_duplicates)
        except ValueError:
            raise lean_track._NotPlain from None
        if not isinstance(fields, dict):
            raise lean_track._NotPlain
        return fields

    ours = decoded(lambda: lean_track._plain_json(request, body))  # type: ignore[arg-type]
    theirs = decoded(with_loads)
    assert repr(ours) == repr(theirs)  # repr: NaN is not equal to itself
