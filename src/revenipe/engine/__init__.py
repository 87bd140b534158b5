"""The pure rules of Revenipe: no I/O, no clock, no settings.

Every function here takes `now` (or the instants it needs) as an argument, so the
whole timeline of a grant can be replayed and tested in memory. The rules are stated in
docs/concepts/; this is where each one is decided:

- `amounts`: amounts are positive bounded integers; ids and texts are checked.
- `periods`: intervals, anchors, month-end clamping, ISO-8601 durations.
- `grants`: the state of one grant over time (resets, rollover, expiry).
- `burn`: which grants pay for a track, in which order, and how much each.
- `usage`: a track's and a reversal's bookkeeping decided whole (grant states, ledger
  entries, the usage event), for the services to persist.
- `reservations`: a hold (drawn like a track, `held` entries) and how it closes (settle,
  release, expiry: `released`, `consumed`, write-offs of units whose period ended).
- `subscriptions`: the life of a subscription (trial, periods, renewal, cancel, plan
  change).
- `sources`: who provides an access source (the `Provider` names).
- `tokens`: customer tokens, signed and verified.
- `return_urls`: which purchase return URLs an app may list, and a purchase may use.
- `alerts`: usage alert thresholds: which are crossed, what a change crossed or recovered.
- `webhook_signing`: Standard Webhooks signatures of outbound webhooks.
- `errors`: the stable codes of refusals and input errors, and `InvariantViolation`.
"""
