"""The sandbox provider's customer-facing side: the hosted checkout page and the
payment sheet's confirm calls.

The checkout page is plain HTML: a pay button and a cancel button, each a form that
posts to this server. Submitting the pay form completes the purchase, so a script can
do what a person does. No authentication: knowing the session id (128 random bits) or
an intent's client secret is what allows completing it, as with Stripe's own.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from revenipe.engine.errors import RevenipeError
from revenipe.server.requests import IntentConfirm
from revenipe.server.routes.common import ERRORS
from revenipe.server.runtime import Runtime
from revenipe.services.purchases.sandbox import checkout as sandbox_service
from revenipe.services.purchases.sandbox.checkout import CheckoutView, Completion
from revenipe.wire import purchases as wire

SessionId = Annotated[str, Path(max_length=64, pattern=r"^cs_sbx_[0-9a-f]{32}$")]
IntentId = Annotated[str, Path(max_length=64, pattern=r"^[a-z]{2,4}_sbx_[0-9a-f]{32}$")]
_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["sandbox"], responses=ERRORS)
    ctx = runtime.ctx

    @router.get("/v1/sandbox/checkout/{session_id}", include_in_schema=False)
    def checkout_page(session_id: SessionId) -> Response:
        try:
            view = sandbox_service.checkout_view(ctx, session_id)
        except RevenipeError as exc:
            return _page("Checkout not found", f"<p>{html.escape(exc.message)}</p>", 404)
        return _page(f"{view.app_name}: checkout", _checkout_body(view))

    @router.post("/v1/sandbox/checkout/{session_id}/pay", include_in_schema=False)
    def pay(session_id: SessionId) -> Response:
        return _finish(lambda: sandbox_service.complete_checkout(ctx, session_id, pay=True))

    @router.post("/v1/sandbox/checkout/{session_id}/cancel", include_in_schema=False)
    def cancel(session_id: SessionId) -> Response:
        return _finish(lambda: sandbox_service.complete_checkout(ctx, session_id, pay=False))

    def confirm(intent_id: str, body: IntentConfirm) -> JSONResponse:
        done = sandbox_service.confirm_intent(
            ctx, intent_id, body.client_secret, decline=body.outcome == "declined"
        )
        return JSONResponse(wire.intent_confirmed_to_wire(done))

    @router.post(
        "/v1/sandbox/payment_intents/{intent_id}/confirm",
        response_model=wire.IntentConfirmed,
        summary="Confirm a sandbox payment intent (what a payment sheet does)",
    )
    def confirm_payment(intent_id: IntentId, body: IntentConfirm) -> JSONResponse:
        return confirm(intent_id, body)

    @router.post(
        "/v1/sandbox/setup_intents/{intent_id}/confirm",
        response_model=wire.IntentConfirmed,
        summary="Confirm a sandbox setup intent (a payment method for a trial)",
    )
    def confirm_setup(intent_id: IntentId, body: IntentConfirm) -> JSONResponse:
        return confirm(intent_id, body)

    return router


def _finish(complete: Callable[[], Completion]) -> Response:
    try:
        done: Completion = complete()
    except RevenipeError as exc:
        return _page("Checkout closed", f"<p>{html.escape(exc.message)}</p>", 409)
    if done.redirect_url:
        return _return_to(done.redirect_url, done.status)
    if done.status == "complete":
        return _page("Payment complete", "<p>Thank you: the purchase is complete.</p>")
    return _page("Checkout canceled", "<p>Nothing was charged.</p>")


def _return_to(url: str, status: str) -> Response:
    """Back to the app: a 303 to its return URL (a deep link such as myapp://paid too),
    with a page that links to it for a browser that does not follow a redirect to a
    custom scheme. The URL was checked against the app's list when the checkout began
    (`engine.return_urls`: no script scheme, no control character); it is escaped here
    for HTML, and percent-encoded for the header as Starlette's redirect does."""
    redirect = RedirectResponse(url, status_code=303, headers=_NO_STORE)
    done = "The purchase is complete." if status == "complete" else "Nothing was charged."
    link = html.escape(url, quote=True)
    page = _page(
        "Back to the app",
        f'<p>{done}</p><p><a id="return" href="{link}" rel="noreferrer">Back to the app</a></p>',
    )
    return Response(
        page.body,
        status_code=303,
        headers={"location": redirect.headers["location"], **_NO_STORE},
        media_type="text/html",
    )


def _amount(price: int | None, currency: str | None) -> str:
    if not price:
        return "free"
    return f"{price // 100}.{price % 100:02d} {(currency or 'usd').upper()}"


def _checkout_body(view: CheckoutView) -> str:
    name = html.escape(view.product_name)
    if view.status != "open":
        return f"<h1>{name}</h1><p>This checkout is {html.escape(view.status)}.</p>"
    every = f" every {html.escape(view.interval)}" if view.interval else ""
    if view.kind == "setup":
        summary = f"Save a payment method for {name}"
        button = "Save card"
    elif view.trial:
        summary = (
            f"{name}: free trial ({html.escape(view.trial)}), then "
            f"{_amount(view.price, view.currency)}{every}"
        )
        button = "Start trial"
    else:
        summary = f"{name}: {_amount(view.price, view.currency)}{every}"
        button = "Pay"
    session = html.escape(view.session_id)
    return (
        f"<h1>{summary}</h1>"
        "<p>Sandbox: no payment network is involved and no card is charged.</p>"
        f'<form method="post" action="{session}/pay" id="pay">'
        f'<button type="submit" name="action" value="pay">{button}</button></form>'
        f'<form method="post" action="{session}/cancel" id="cancel">'
        '<button type="submit" name="action" value="cancel">Cancel</button></form>'
    )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(document, status, headers=_NO_STORE)
