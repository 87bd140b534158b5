"""Use cases: one function per operation, one transaction each. No SQL, no HTTP.

- `context`: what every operation gets (database, clock, catalog cache).
- `apps`: apps, secret keys, settings.
- `catalogs`: validating and applying an app's catalog.
- `customers`: customers, access sources, grants of products and amounts, state.
- `usage`: track, check and reversal (the heart: see PRODUCT.md, "Semantics of track").
- `verify`: the ledger invariants.
"""
