"""The two track endpoints, answered without FastAPI's routing, dependency solving and
request models, for requests that are plainly well formed (docs/adr/0016).

A track is what clients call most; FastAPI's machinery around it cost more CPU than the
track itself (about 60% of a track request's samples under load). This ASGI layer sits
inside the flood and body-size limits, right in front of FastAPI's router, and takes
`POST /v1/customer/track` and `POST /v1/customers/{external_id}/track` when their body
and headers pass checks at least as strict as the request models'. It then calls the
same authentication, the same service and the same response builder as the FastAPI
routes, and answers errors raised after the body was accepted with the same error
bodies. The track is awaited from the event loop (group commit's lane thread writes it)
unless authenticating needs a database read: then the call runs in the thread pool.
Anything else, a body the models might judge differently included, goes on to FastAPI
untouched (the body replayed), so every refusal keeps its exact shape: the contract,
authorization, bad-input and fuzz suites run against both paths.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from revenipe.engine.amounts import MAX_AMOUNT
from revenipe.engine.errors import RevenipeError
from revenipe.server.errors import ApiError, api_error_response, revenipe_error_response
from revenipe.server.runtime import Runtime
from revenipe.server.security import NotCached, server_app_id
from revenipe.services.customers import CustomerRef
from revenipe.services.usage import track as usage_service
from revenipe.services.usage.track import TrackResult
from revenipe.wire import usage as usage_wire

CLIENT_TRACK_PATH = "/v1/customer/track"
_API_TRACK_PATH = re.compile(r"/v1/customers/([^/]+)/track")
_MAX_IDEMPOTENCY_KEY = 255  # the routes' `IdempotencyKey` header bound
_MAX_ID = 64  # `CatalogId`, `InternalId`


class _NotPlain(Exception):
    """The request is not plainly well formed: FastAPI's route decides it."""


class LeanTrack:
    """ASGI middleware: the track endpoints' fast path, FastAPI for everything else."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        matched = _API_TRACK_PATH.fullmatch(path)
        if path != CLIENT_TRACK_PATH and matched is None:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        replay = _replaying(body, more, receive)
        try:
            if more:
                raise _NotPlain
            request = Request(scope)
            key = _idempotency_key(request)
            fields = _plain_json(request, body)
            if matched is None:
                call = self._client_track(request, fields, key)
            else:
                call = self._api_track(request, matched.group(1), fields, key)
        except _NotPlain:
            await self.app(scope, replay, send)
            return
        response = await call()
        await response(scope, replay, send)

    def _client_track(
        self, request: Request, fields: dict[str, Any], key: str | None
    ) -> Callable[[], Awaitable[JSONResponse | _JsonAnswer]]:
        client_id = _text(fields, "client_id", required=True)
        call = _TrackCall(
            authenticate=functools.partial(self.runtime.customer_app_id, request, client_id),
            customer=functools.partial(CustomerRef.internal, client_id),
            tracked_id=_text(fields, "entitlement_id", required=True),
            value=_amount(fields),
            access_source_id=_text(fields, "access_source_id", required=False),
            idempotency_key=key,
            create_customer=False,
            to_wire=usage_wire.track_result_to_wire,
            id_field="entitlement_id",
        )
        return functools.partial(_answer, self.runtime, call)

    def _api_track(
        self, request: Request, external_id: str, fields: dict[str, Any], key: str | None
    ) -> Callable[[], Awaitable[JSONResponse | _JsonAnswer]]:
        if set(fields) - {"id", "value", "access_source_id"}:
            raise _NotPlain  # the server API refuses unknown fields: its route says how
        call = _TrackCall(
            authenticate=functools.partial(server_app_id, request, self.runtime.secret_keys),
            customer=functools.partial(CustomerRef.external, external_id),
            tracked_id=_text(fields, "id", required=True),
            value=_amount(fields),
            access_source_id=_text(fields, "access_source_id", required=False),
            idempotency_key=key,
            create_customer=True,
            to_wire=usage_wire.api_track_to_wire,
            id_field="id",
        )
        return functools.partial(_answer, self.runtime, call)


@dataclass(frozen=True, slots=True)
class _TrackCall:
    """A plainly well-formed track request: who it claims to be, what it asks."""

    authenticate: Callable[..., str]
    """`(cached_only=...)` -> the app's id; raises `ApiError` (401, 403, 429), or
    `NotCached` when `cached_only` and it would read the database."""
    customer: Callable[[], CustomerRef]
    """The customer the request names; raises `RevenipeError` for an id it refuses
    (inside `_answer`, which answers it as the route would)."""
    tracked_id: str
    value: int
    access_source_id: str | None
    idempotency_key: str | None
    create_customer: bool
    to_wire: Callable[[TrackResult], Mapping[str, Any]]
    id_field: str
    """What the request calls the tracked id: its errors name it so."""


class _JsonAnswer:
    """A 200 with a JSON body, byte for byte what `JSONResponse` sends (same encoding,
    same headers), without its general machinery: a track's answer is sent often."""

    __slots__ = ("body", "headers")

    def __init__(self, content: Mapping[str, Any], *, replayed: bool) -> None:
        self.body = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")
        self.headers = [
            (b"content-length", str(len(self.body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        if replayed:
            self.headers.insert(0, (b"idempotent-replayed", b"true"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _answer(runtime: Runtime, call: _TrackCall) -> JSONResponse | _JsonAnswer:
    """Authenticate and track, then answer as the route would, errors included.

    From the event loop to the group commit's writer and back, with no thread-pool hop,
    when authenticating needs no database read (the app and the secret key are in the
    caches: every request but the first of a few seconds); otherwise in the thread
    pool, where the routes' sync handlers run too."""
    try:
        try:
            app_id = call.authenticate(cached_only=True)
        except NotCached:
            result = await run_in_threadpool(_track_in_thread, runtime, call)
        else:
            result = await usage_service.track_async(
                runtime.ctx,
                app_id,
                call.customer(),
                call.tracked_id,
                call.value,
                access_source_id=call.access_source_id,
                idempotency_key=call.idempotency_key,
                create_customer=call.create_customer,
                id_field=call.id_field,
            )
    except ApiError as exc:
        return api_error_response(exc)
    except RevenipeError as exc:
        return revenipe_error_response(exc)
    return _JsonAnswer(call.to_wire(result), replayed=result.replayed)


def _track_in_thread(runtime: Runtime, call: _TrackCall) -> TrackResult:
    return usage_service.track(
        runtime.ctx,
        call.authenticate(cached_only=False),
        call.customer(),
        call.tracked_id,
        call.value,
        access_source_id=call.access_source_id,
        idempotency_key=call.idempotency_key,
        create_customer=call.create_customer,
        id_field=call.id_field,
    )


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body when it arrives in one message (the body-size limit in front hands it
    on whole); `more` when it does not, and the route reads the rest itself."""
    message = await receive()
    if message["type"] != "http.request":
        return b"", True
    return message.get("body", b""), bool(message.get("more_body", False))


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` for the app behind: the message already read, then the real ones."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


def _idempotency_key(request: Request) -> str | None:
    values = request.headers.getlist("idempotency-key")
    if not values:
        return None
    if len(values) > 1 or len(values[0]) > _MAX_IDEMPOTENCY_KEY:
        raise _NotPlain
    return values[0]


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise _NotPlain
    return fields


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates)
"""`json.loads(body, object_pairs_hook=...)` makes a decoder on every call: 3 of its
4.4 us a body here. Used on the event loop only (its scanner keeps a memo per call)."""


def _plain_json(request: Request, body: bytes) -> dict[str, Any]:
    """A JSON object with each key once, sent as `application/json`."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _NotPlain
    try:
        # What `json.loads` does with bytes: the encoding detected, then decoded.
        fields = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):
        raise _NotPlain from None
    if not isinstance(fields, dict):
        raise _NotPlain
    return fields


def _text(fields: dict[str, Any], name: str, *, required: bool) -> Any:
    value = fields.get(name)
    if value is None:
        if required:
            raise _NotPlain
        return None
    if type(value) is not str or not 1 <= len(value) <= _MAX_ID:
        raise _NotPlain
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates: leave them to the request models
        raise _NotPlain from None
    return value


def _amount(fields: dict[str, Any]) -> int:
    value = fields.get("value")
    if type(value) is not int or not 1 <= value <= MAX_AMOUNT:
        raise _NotPlain
    return value
