"""Every JSON answer's shape, defined once: a `TypedDict` per object and the function
that builds it from a domain object (docs/concepts/client-protocol.md#objects for the
client protocol's). The server answers with these dicts, the OpenAPI document is written
from these types, and the CLI's `--json` output is built here too, nowhere else.

Integers stay integers, timestamps are ISO-8601 UTC with a `Z`, required fields are never
null. Nothing here imports pydantic or FastAPI (the CLI imports these modules cheaply).

- `common`: `timestamp`, the `Timestamp` field, `Doc` (a field's description in the
  OpenAPI document), `OMITTED` (members left out rather than null), the error body and
  an invalid catalog's problems.
- `customers`: Customer and Refresh (entitlements, usage keys, subscriptions, add-ons,
  base plans), the customer list, grants, customer tokens.
- `usage`: track results (client protocol, server API, CLI), check, reversal, usage
  history.
- `reservations`: a hold, a settle or release, a reservation's state.
- `ledger`: the ledger export, and `revenipe verify`'s report.
- `webhooks_out`: outbound webhook endpoints, deliveries, events read back.
- `apps`: app settings, secret keys, a sandbox app's clock, the CLI's app listings.
- `catalog`: products, the catalog document, applied and validated catalogs (server API
  and CLI).
- `purchases`: start purchase, cancel, uncancel, change plan, attach a payment method,
  confirmed sandbox intents.
- `providers`: Stripe and RevenueCat settings (as the server and the CLI show them),
  webhook deliveries received.
"""
