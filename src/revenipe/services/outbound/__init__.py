"""Outbound webhooks (docs/concepts/webhooks-out.md, docs/adr/0019).

- `targets`: which URLs may be called (https, no private addresses), checked when an
  endpoint is saved and again before each send.
- `endpoints`: an app's endpoints (create, list, update, rotate the secret, delete,
  ping), deliveries listed and redelivered, events read back (`GET /v1/events`).
- `emit`: events written in the transaction of the change that causes them (usage
  alerts after a track).
- `worker`: the delivery worker every server process runs.
"""
