"""The HTTP server: the Revenipe client protocol and our server API. Edges only:
parse, authorize, call a service, render.

- `app`: builds the ASGI application (`create_app`, `create_app_from_env`).
- `settings`: what the server reads from the environment.
- `security`: app ids, secret keys, customer tokens and the token policy.
- `limits`: body size and anonymous-login rate limits.
- `errors`: every error becomes a JSON body with `code` and `message`.
- `schemas`: request and response models (strict; also the OpenAPI document).
- `client_protocol`: `v1/client/...` and `v1/customer/...`, exactly as the reference.
- `api`: the server API under `/v1/`, authenticated by secret keys.
"""
