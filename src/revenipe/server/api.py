"""The server API under `/v1/`: for the app's own backend, authenticated by secret key.

Customers are named by the app's external id in paths (URL-encoded).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from revenipe.catalog import parse_catalog
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.periods import require_utc
from revenipe.server import schemas
from revenipe.server.client_protocol import ERRORS, IdempotencyKey
from revenipe.server.runtime import Runtime
from revenipe.server.security import server_app_id
from revenipe.services import apps as app_service
from revenipe.services import catalogs as catalog_service
from revenipe.services import customers as customer_service
from revenipe.services import tokens as token_service
from revenipe.services.customers import CustomerRef
from revenipe.services.purchases.sandbox import clock as clock_service
from revenipe.services.usage import history as history_service
from revenipe.services.usage import reversal as reversal_service
from revenipe.services.usage import track as usage_service
from revenipe.wire import customer_to_wire, ledger_entry_to_wire, timestamp, usage_event_to_wire

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z]{3}_[0-9a-f]{1,40}$")]
CatalogIdQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_.\-]{1,64}$")]
TimeQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9T:.+\-Z ]{4,64}$")]


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} must be an ISO-8601 time with a zone, e.g. 2026-11-25T10:00:00Z",
            field=field,
        )
    return require_utc(moment, field=field)


def _external(external_id: str) -> CustomerRef:
    return CustomerRef.external(external_id)


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["server API"], responses=ERRORS)
    ctx = runtime.ctx

    def app_of(request: Request) -> str:
        return server_app_id(request, runtime.secret_keys)

    # --- app ---------------------------------------------------------------------------

    @router.get("/app", response_model=schemas.AppSettingsOut, summary="App settings")
    def get_app(request: Request) -> JSONResponse:
        return JSONResponse(_app_settings(app_service.get_app(ctx, app_of(request))))

    @router.patch(
        "/app", response_model=schemas.AppSettingsOut, summary="Change app settings (token policy)"
    )
    def update_app(body: schemas.AppSettingsUpdate, request: Request) -> JSONResponse:
        app_id = app_of(request)
        app = app_service.set_token_policy(ctx, app_id, body.token_policy)
        runtime.app_cache.forget(app_id)
        return JSONResponse(_app_settings(app))

    @router.get(
        "/secret_keys",
        response_model=schemas.SecretKeyList,
        summary="The app's secret keys (ids only)",
    )
    def list_keys(request: Request) -> JSONResponse:
        keys = app_service.list_secret_keys(ctx, app_of(request))
        return JSONResponse(
            {
                "secret_keys": [
                    {
                        "key_id": k["id"],
                        "created_at": timestamp(k["created_at"]),
                        "revoked_at": timestamp(k["revoked_at"]),
                    }
                    for k in keys
                ]
            }
        )

    @router.post(
        "/secret_keys",
        response_model=schemas.SecretKeyOut,
        status_code=201,
        summary="Create a secret key (shown once)",
    )
    def create_key(request: Request) -> JSONResponse:
        key_id, key = app_service.create_secret_key(ctx, app_of(request))
        return JSONResponse({"key_id": key_id, "secret_key": key}, 201)

    @router.delete("/secret_keys/{key_id}", status_code=204, summary="Revoke a secret key")
    def revoke_key(
        key_id: Annotated[str, Path(max_length=64, pattern=r"^key_[0-9a-f]{1,40}$")],
        request: Request,
    ) -> Response:
        app_service.revoke_secret_key(ctx, app_of(request), key_id)
        runtime.secret_keys.forget_all()
        return Response(status_code=204)

    # --- catalog -------------------------------------------------------------------------

    @router.get("/catalog", response_model=schemas.CatalogOut, summary="The current catalog")
    def get_catalog(request: Request) -> JSONResponse:
        version, catalog = catalog_service.get_catalog(ctx, app_of(request))
        return JSONResponse({"version": version, "catalog": catalog.to_document()})

    @router.put(
        "/catalog",
        response_model=schemas.CatalogApplied,
        summary="Apply a catalog (the YAML format, as JSON)",
    )
    def put_catalog(request: Request, document: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        app_id = app_of(request)
        applied = catalog_service.apply_catalog(ctx, app_id, parse_catalog(document))
        return JSONResponse({"version": applied.version, "changed": applied.changed})

    @router.post(
        "/catalog/validate",
        response_model=schemas.CatalogValid,
        summary="Validate a catalog without applying it",
    )
    def validate_catalog(
        request: Request, document: Annotated[dict[str, Any], Body()]
    ) -> JSONResponse:
        app_of(request)
        catalog = parse_catalog(document)
        return JSONResponse(
            {
                "valid": True,
                "entitlements": len(catalog.entitlements),
                "usage_keys": len(catalog.usage_keys),
                "products": len(catalog.products),
            }
        )

    # --- customers -----------------------------------------------------------------------

    @router.get("/customers", response_model=schemas.CustomerList, summary="List customers")
    def list_customers(request: Request, cursor: Cursor = None, limit: Limit = 100) -> JSONResponse:
        rows = customer_service.list_customers(ctx, app_of(request), after_id=cursor, limit=limit)
        return JSONResponse(
            {
                "customers": [
                    {
                        "client_id": c.id,
                        "external_id": c.external_id,
                        "created_at": timestamp(c.created_at),
                    }
                    for c in rows
                ],
                "next_cursor": rows[-1].id if len(rows) == limit else None,
            }
        )

    @router.get(
        "/customers/{external_id}", response_model=schemas.ApiCustomer, summary="A customer's state"
    )
    def get_customer(external_id: str, request: Request) -> JSONResponse:
        state = customer_service.customer_state(ctx, app_of(request), _external(external_id))
        return JSONResponse({**customer_to_wire(state), "external_id": external_id})

    @router.post(
        "/customers/{external_id}/grants",
        response_model=schemas.GrantOut,
        status_code=201,
        summary="Grant a product or an entitlement amount",
    )
    def grant(external_id: str, body: schemas.GrantRequest, request: Request) -> JSONResponse:
        app_id = app_of(request)
        expires_at = _parse_time(body.expires_at, "expires_at")
        if (body.product_id is None) == (body.entitlement_id is None):
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, "give exactly one of product_id, entitlement_id"
            )
        if body.product_id is not None:
            if body.amount is not None:
                raise RevenipeError(
                    ErrorCode.INVALID_ARGUMENT,
                    "amount goes with entitlement_id, not product_id",
                    field="amount",
                )
            granted = customer_service.grant_product(
                ctx,
                app_id,
                _external(external_id),
                body.product_id,
                expires_at=expires_at,
                priority=body.priority,
            )
        else:
            assert body.entitlement_id is not None
            granted = customer_service.grant_entitlement(
                ctx,
                app_id,
                _external(external_id),
                body.entitlement_id,
                body.amount,
                expires_at=expires_at,
                priority=body.priority,
            )
        return JSONResponse(
            {
                "client_id": granted.customer_id,
                "access_source_id": granted.access_source_id,
                "grant_ids": list(granted.grant_ids),
            },
            201,
        )

    @router.post(
        "/customers/{external_id}/track",
        response_model=schemas.ApiTrackOut,
        summary="Consume usage for a customer (created if new)",
    )
    def track(
        external_id: str,
        body: schemas.ApiTrackRequest,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        result = usage_service.track(
            ctx,
            app_of(request),
            _external(external_id),
            body.id,
            body.value,
            access_source_id=body.access_source_id,
            idempotency_key=idempotency_key,
            create_customer=True,
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(
            {
                **result.to_wire(),
                "usage_event_id": result.usage_event_id,
                "client_id": result.customer_id,
            },
            headers=headers,
        )

    @router.post(
        "/customers/{external_id}/check",
        response_model=schemas.CheckOut,
        summary="Would a track succeed? Which grants would pay? (changes nothing)",
    )
    def check(external_id: str, body: schemas.CheckRequest, request: Request) -> JSONResponse:
        result = usage_service.check(
            ctx,
            app_of(request),
            _external(external_id),
            body.id,
            body.value,
            access_source_id=body.access_source_id,
        )
        return JSONResponse(
            {
                "would_succeed": result.would_succeed,
                "requested": result.requested,
                "available": result.available,
                "remaining_after": result.remaining_after,
                "entitlement_id": result.entitlement_id,
                "access_source_id": result.access_source_id,
                "error": result.error,
                "draws": [
                    {
                        "grant_id": d.grant_id,
                        "access_source_id": d.access_source_id,
                        "entitlement_id": d.entitlement_id,
                        "amount": d.amount,
                    }
                    for d in result.draws
                ],
            }
        )

    @router.post(
        "/customers/{external_id}/tokens",
        response_model=schemas.TokenOut,
        status_code=201,
        summary="Mint a customer token (created if new)",
    )
    def mint_token(
        external_id: str, request: Request, body: schemas.TokenRequest | None = None
    ) -> JSONResponse:
        minted = token_service.mint_customer_token(
            ctx, app_of(request), external_id, body.ttl_seconds if body else None
        )
        return JSONResponse(
            {
                "token": minted.token,
                "client_id": minted.customer_id,
                "expires_at": timestamp(minted.expires_at),
            },
            201,
        )

    # --- sandbox test clock ------------------------------------------------------------------

    @router.get("/sandbox/clock", response_model=schemas.ClockOut, summary="A sandbox app's time")
    def sandbox_clock(request: Request) -> JSONResponse:
        return JSONResponse(_clock(clock_service.clock(ctx, app_of(request))))

    @router.post(
        "/sandbox/clock/advance",
        response_model=schemas.ClockOut,
        summary="Move a sandbox app's clock forward (renewals, trials and expiry follow)",
    )
    def advance_sandbox_clock(body: schemas.ClockAdvance, request: Request) -> JSONResponse:
        seconds = body.days * 86_400 + body.hours * 3_600 + body.seconds
        return JSONResponse(_clock(clock_service.advance_clock(ctx, app_of(request), seconds)))

    # --- usage history, reversal, ledger ---------------------------------------------------

    @router.get(
        "/usage_events",
        response_model=schemas.UsageEventList,
        summary="Usage history, newest first",
    )
    def usage_events(
        request: Request,
        customer: Annotated[str | None, Query(max_length=256)] = None,
        id: CatalogIdQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> JSONResponse:
        events = history_service.usage_history(
            ctx,
            app_of(request),
            customer=_external(customer) if customer else None,
            tracked_id=id,
            since=_parse_time(since, "since"),
            until=_parse_time(until, "until"),
            before_id=cursor,
            limit=limit,
        )
        return JSONResponse(
            {
                "usage_events": [usage_event_to_wire(e) for e in events],
                "next_cursor": events[-1].id if len(events) == limit else None,
            }
        )

    @router.post(
        "/usage_events/{usage_event_id}/reversals",
        response_model=schemas.ReversalOut,
        status_code=201,
        summary="Give back what a usage event consumed",
    )
    def reverse(
        usage_event_id: str,
        request: Request,
        body: schemas.ReversalRequest | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        result = reversal_service.reverse(
            ctx,
            app_of(request),
            usage_event_id,
            body.amount if body else None,
            idempotency_key=idempotency_key,
        )
        return JSONResponse(
            {
                "reversal_id": result.reversal_id,
                "usage_event_id": result.usage_event_id,
                "amount": result.amount,
                "total_reversed": result.total_reversed,
                "credits": [{"grant_id": g, "amount": a} for g, a in result.credits],
            },
            201,
        )

    @router.get("/ledger", response_model=schemas.LedgerPage, summary="Ledger export, oldest first")
    def ledger(
        request: Request,
        customer: Annotated[str | None, Query(max_length=256)] = None,
        cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        limit: Limit = 1000,
    ) -> JSONResponse:
        entries = history_service.ledger_export(
            ctx,
            app_of(request),
            customer=_external(customer) if customer else None,
            after_id=cursor or 0,
            limit=limit,
        )
        return JSONResponse(
            {
                "entries": [ledger_entry_to_wire(e) for e in entries],
                "next_cursor": str(entries[-1]["id"]) if len(entries) == limit else None,
            }
        )

    return router


def _app_settings(app: Any) -> dict[str, Any]:
    return {
        "app_id": app.id,
        "name": app.name,
        "token_policy": app.token_policy,
        "catalog_version": app.catalog_version,
        "sandbox": bool(app.sandbox),
    }


def _clock(state: clock_service.ClockState) -> dict[str, Any]:
    return {
        "app_id": state.app_id,
        "now": timestamp(state.now),
        "clock_offset_seconds": state.clock_offset_seconds,
    }
