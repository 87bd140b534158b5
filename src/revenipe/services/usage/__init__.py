"""Usage: what customers consume and how it is read back.

- `track`: track (consume, all or nothing) and check (the same decision, nothing written);
- `batch`: many tracks in one call, each decided as `track` would, safe to retry;
- `reservations`: hold, settle, release and read reservations (holds of usage with a TTL;
  closing them is `access.holds`);
- `reversal`: a usage event given back to the grants that paid for it;
- `history`: usage events and ledger pages;
- `verify`: the ledger's invariants, checked over a whole database or one app.

The rules themselves are the engine's (`engine.burn` orders the grants, `engine.grants`
settles them to `now`, `engine.usage` decides a track's and a reversal's bookkeeping);
these modules load, call the engine and persist what it decided, one transaction per
operation.
"""
