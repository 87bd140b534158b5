"""The HTTP server: the Revenipe client protocol (docs/concepts/client-protocol.md) and
our server API. Edges only: parse, authorize, call a service, render.

- `app`: builds the ASGI application (`create_app`, `create_app_from_env`).
- `settings`: what the server reads from the environment.
- `security`: app ids, secret keys, customer tokens and the token policy.
- `limits`: body size and anonymous-login rate limits.
- `errors`: every error becomes a JSON body with `code` and `message`.
- `http_limits`: a bound on the size of a request's head (request line and headers).
- `runtime`: what the routes share (service context, caches, rate limits).
- `requests`: request models (strict); answers are `revenipe.wire`'s shapes.
- `routes`: one module per resource: the client protocol, the server API under `/v1/`
  (authenticated by secret keys), the providers' webhooks and the sandbox pages.
- `lean_track`: the track endpoints' fast path for plainly well-formed requests, in
  front of FastAPI, calling what the routes call (docs/adr/0016).
- `openapi`: the OpenAPI document, as served and as committed.
"""
