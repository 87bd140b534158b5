"""The server's routes, one module per resource. Each module has a `build_router(runtime)`
that returns its `APIRouter`: its routes, how they authenticate, and the error answers
they declare (`common.ERRORS`). Handlers parse, call one service, and answer with a
`revenipe.wire` builder's dict as a `JSONResponse` (the shapes document the answer in
OpenAPI; nothing validates it a second time, ADR 0006).

- `common`: the declared error answers, shared parameters (cursors, limits, times,
  `Idempotency-Key`), the server API's router and its secret-key authentication.

Client protocol (exactly as published, docs/concepts/client-protocol.md; app id and
customer tokens):

- `client_protocol`: login, refresh, track, the app's products.
- `purchases`: start a purchase, cancel, uncancel, change plan, attach a payment method.

Server API (`/v1/...`, secret key):

- `apps`: app settings (token policy) and secret keys.
- `catalog`: read, apply and validate the catalog.
- `customers`: customers, grants, customer tokens.
- `usage`: track, check, reversals, usage history.
- `reservations`: hold, settle, release, read a reservation; and the same under customer
  tokens as client-protocol extensions (`/v1/customer/reservations...`).
- `ledger`: the ledger export.
- `webhook_endpoints`: outbound webhook endpoints, deliveries, `GET /v1/events`.
- `sandbox_clock`: a sandbox app's test clock.
- `stripe`: the app's Stripe settings, Stripe's webhook and the checkout return page.
- `revenuecat`: the app's RevenueCat settings and RevenueCat's webhook.

Without a key:

- `sandbox_pages`: the sandbox checkout page and payment-sheet intent confirmation.
"""
