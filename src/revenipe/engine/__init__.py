"""The pure rules of Revenipe: no I/O, no clock, no settings.

Every function here takes `now` (or the instants it needs) as an argument, so the
whole timeline of a grant can be replayed and tested in memory.

- `periods`: intervals, anchors, month-end clamping, ISO-8601 durations.
- `grants`: the state of one grant over time (resets, rollover, expiry).
- `burn`: which grants pay for a track, in which order, and how much each.
- `errors`: the stable codes of refusals and input errors.
"""
