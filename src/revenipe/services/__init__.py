"""Use cases: one function per operation, one transaction each. No SQL, no HTTP.

Each operation loads what it needs through `revenipe.storage`, lets `revenipe.engine`
decide, persists what was decided and answers. Modules and packages, by domain:

- `context`: what every operation gets (database, clock, catalog cache).
- `apps`: apps, secret keys, settings.
- `catalogs`: validating and applying an app's catalog; its versions and their diff.
- `rollups`: usage folded into the dashboard's aggregates by a worker in every server,
  and the overview's and analytics' figures read from them (docs/adr/0021).
- `customers`: customers, their state (balances, grants, sources), manual grants.
- `tokens`: customer tokens minted and checked.
- `operators`: the dashboard's operators: accounts, password and one-time-link
  sign-in, sessions, the limit on failed sign-ins.
- `outbound/`: outbound webhooks: endpoints, events written with each change (usage
  alerts), the delivery worker, the SSRF guard.
- `access`: access sources and their grants, kept in step with what a customer holds.
- `usage`: track, check, reversal, history and the ledger's verification.
- `purchases`: purchases and subscription changes, one package per provider.

Import rules (import-linter, pyproject.toml): usage and purchases build on customers,
which builds on access; access imports neither; providers never import each other.
"""
