"""Server API: outbound webhook endpoints, their deliveries, and events read back
(docs/concepts/webhooks-out.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StrictBool, StrictStr

from revenipe.server.requests import ApiRequest
from revenipe.server.routes.common import Limit, secret_key_app, server_api_router
from revenipe.server.runtime import Runtime
from revenipe.services.outbound import endpoints as service
from revenipe.wire import webhooks_out as wire

EndpointId = Annotated[str, Path(max_length=64, pattern=r"^whe_[0-9a-f]{1,40}$")]
DeliveryId = Annotated[str, Path(max_length=64, pattern=r"^whd_[0-9a-f]{1,40}$")]
DeliveryCursor = Annotated[str | None, Query(max_length=64, pattern=r"^whd_[0-9a-f]{1,40}$")]
EventCursor = Annotated[int, Query(ge=0, le=2**63 - 1)]
Url = Annotated[StrictStr, Field(min_length=1, max_length=2048)]
EventTypes = Annotated[list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=20)]
Description = Annotated[StrictStr, Field(max_length=500)]


class EndpointCreate(ApiRequest):
    url: Url
    event_types: EventTypes | None = Field(default=None, description="Omitted: every type")
    description: Description | None = None


class EndpointUpdate(ApiRequest):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: StrictBool | None = None


def build_router(runtime: Runtime) -> APIRouter:
    router = server_api_router()
    ctx = runtime.ctx
    app_of = secret_key_app(runtime)
    policy = runtime.settings.webhook_policy

    @router.post(
        "/webhook_endpoints",
        response_model=wire.WebhookEndpointCreated,
        status_code=201,
        summary="Create a webhook endpoint (its secret is shown once)",
    )
    def create(body: EndpointCreate, request: Request) -> JSONResponse:
        created = service.create_endpoint(
            ctx, app_of(request), policy, body.url, body.event_types, body.description
        )
        return JSONResponse(wire.endpoint_created_to_wire(created.endpoint, created.secret), 201)

    @router.get(
        "/webhook_endpoints", response_model=wire.WebhookEndpointList, summary="Webhook endpoints"
    )
    def list_all(request: Request) -> JSONResponse:
        return JSONResponse(
            wire.endpoint_list_to_wire(service.list_endpoints(ctx, app_of(request)))
        )

    @router.get(
        "/webhook_endpoints/{endpoint_id}",
        response_model=wire.WebhookEndpointOut,
        summary="A webhook endpoint",
    )
    def get_one(endpoint_id: EndpointId, request: Request) -> JSONResponse:
        row = service.get_endpoint(ctx, app_of(request), endpoint_id)
        return JSONResponse(wire.endpoint_to_wire(row))

    @router.patch(
        "/webhook_endpoints/{endpoint_id}",
        response_model=wire.WebhookEndpointOut,
        summary="Change a webhook endpoint (url, event types, description, enabled)",
    )
    def update(endpoint_id: EndpointId, body: EndpointUpdate, request: Request) -> JSONResponse:
        changes: dict[str, Any] = body.model_dump(exclude_unset=True)
        row = service.update_endpoint(ctx, app_of(request), policy, endpoint_id, **changes)
        return JSONResponse(wire.endpoint_to_wire(row))

    @router.delete(
        "/webhook_endpoints/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint"
    )
    def delete(endpoint_id: EndpointId, request: Request) -> Response:
        service.delete_endpoint(ctx, app_of(request), endpoint_id)
        return Response(status_code=204)

    @router.post(
        "/webhook_endpoints/{endpoint_id}/rotate_secret",
        response_model=wire.WebhookEndpointCreated,
        summary="A new signing secret (the previous one also signs for 24 hours)",
    )
    def rotate(endpoint_id: EndpointId, request: Request) -> JSONResponse:
        created = service.rotate_secret(ctx, app_of(request), endpoint_id)
        return JSONResponse(wire.endpoint_created_to_wire(created.endpoint, created.secret))

    @router.post(
        "/webhook_endpoints/{endpoint_id}/test",
        response_model=wire.PingOut,
        status_code=202,
        summary="Send a ping event to this endpoint",
    )
    def ping(endpoint_id: EndpointId, request: Request) -> JSONResponse:
        event_id = service.send_ping(ctx, app_of(request), endpoint_id)
        return JSONResponse({"event_id": event_id}, 202)

    @router.get(
        "/webhook_endpoints/{endpoint_id}/deliveries",
        response_model=wire.WebhookDeliveryPage,
        summary="An endpoint's deliveries and their attempts, newest first",
    )
    def deliveries(
        endpoint_id: EndpointId,
        request: Request,
        cursor: DeliveryCursor = None,
        limit: Limit = 100,
    ) -> JSONResponse:
        views = service.list_deliveries(
            ctx, app_of(request), endpoint_id, before_id=cursor, limit=limit
        )
        return JSONResponse(wire.delivery_page_to_wire(views, limit))

    @router.post(
        "/webhook_deliveries/{delivery_id}/redeliver",
        status_code=202,
        summary="Send a delivery again (same webhook-id)",
    )
    def redeliver(delivery_id: DeliveryId, request: Request) -> Response:
        service.redeliver(ctx, app_of(request), delivery_id)
        return Response(status_code=202)

    @router.get(
        "/events",
        response_model=wire.OutboundEventPage,
        summary="Events after a cursor, oldest first (the webhooks' events, pulled)",
    )
    def events(request: Request, after: EventCursor = 0, limit: Limit = 100) -> JSONResponse:
        rows = service.list_events(ctx, app_of(request), after=after, limit=limit)
        return JSONResponse(wire.event_page_to_wire(rows, limit))

    return router
