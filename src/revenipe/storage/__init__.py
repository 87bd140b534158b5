"""Storage: the only layer that knows SQL and the two dialects (SQLite, PostgreSQL).

- `schema`: table definitions (the single source the migrations are written from).
- `database`: opening a database from a URL, connection settings, transactions,
  running migrations on first use.
- `faults`: database faults as the errors callers expect (`database_busy`,
  `database_unavailable`), and what a dropped connection throws away (docs/adr/0009).
- `group_commit`: concurrent writes of one process run in shared transactions, each
  answered once its transaction committed (`Database.write_grouped`, docs/adr/0015).
- `lane_connections`: on PostgreSQL, each group-commit lane keeps the connection its
  batches run on, handed back to the pool now and then (docs/adr/0015).
- `postgres_engine`: how revenipe connects to PostgreSQL (the pool, what a new connection
  is set to, the URL's `?prepare=off` for a pooler in transaction mode).
- `plan_refresh`: PostgreSQL connections drop their cached plans now and then, so that
  plans made on nearly empty tables do not outlive them (docs/adr/0023).
- `sqlite_checkpoint`: SQLite's write-ahead log copied back into the database file by a
  thread of its own, never inside a commit (docs/adr/0012).
- `sqlite_lock`: how an SQLite writer gets in: a file lock revenipe's writers of all
  processes take turns at, then SQLite's own lock (docs/adr/0022).
- `driver_sql`: how queries run: hand-written SQL on the driver's cursor (SQLite) or
  through `pg_pipeline` (PostgreSQL), and the one place values are converted between
  Python and the columns (`Columns`, `time_in`, `time_out`).
- `pg_pipeline`: PostgreSQL statements sent together through libpq's pipeline, below
  psycopg's cursors, each prepared once per connection (docs/adr/0024).
- One module per aggregate, each holding every query on its tables:
  - `apps`: apps, their secret keys and provider settings.
  - `catalogs`: the catalog versions an app applied.
  - `customers`: customers and their ids at the providers.
  - `sources`: access sources (subscriptions, purchases, promotional access).
  - `grants`: grants.
  - `ledger`: ledger entries.
  - `usage_events`: usage events; `tracks`: what a track runs (its two round trips,
    and a PostgreSQL group-commit batch's tracks together).
  - `reversals`: reversals of usage events.
  - `reservations`: reservations (holds of usage with a TTL; their units are in the
    ledger).
  - `purchases`: purchase attempts (checkouts, payment and setup intents).
  - `webhooks`: provider events received.
  - `webhook_endpoints`: outbound webhook endpoints (where an app's events go).
  - `outbound_events`: the outbox of outbound events, their deliveries and attempts,
    and what usage alerts remember per customer.
  - `operators`, `operator_sessions`, `sign_in_links`, `sign_in_failures`: the
    dashboard's operators, their sessions (token hashes), one-time sign-in links and
    recent failed sign-ins.
  - `rollups`: the dashboard's aggregates: usage per hour and per customer and day,
    active customers, the fold's watermark, access sources counted by status.
- `migrations/`: Alembic environment and versions.

Each module has one row type per table it returns rows of (`AppRow`, `GrantRow`, ...:
frozen dataclasses read from the row by column name). Functions take an open
connection (one transaction) and return a row type, a list of it, or plain values;
their name says which:

- `get_x(conn, <primary key>) -> X | None`: None when absent.
- `require_x(conn, <primary key>) -> X`: raises `RevenipeError` with the code of the
  absence (`APP_NOT_FOUND`, ...) when absent.
- `find_x(conn, <anything else>) -> X | None`: a lookup by something other than the
  primary key (an external id, a provider's id, an idempotency key); X may be a plain
  value (`find_app_id_by_secret_hash -> str | None`).
- `list_x(...) -> list[X]`: every match, in the order the docstring says.
- `map_x(...) -> dict[str, X]`: matches keyed by id, or a total per id.
- `has_x(...) -> bool`: whether any row matches.
- `iter_x(conn, app_id | None) -> Iterator[X]`: every row of one app or of the whole
  database, read in batches (for `revenipe verify`, which reads tables whole).
- writes: `insert_x` (a new row; `insert_x_if_new` returns False when it existed),
  `update_x...` (some columns of existing rows; returns a bool when it may match
  nothing), `save_x` (a row or rows written whole: insert or update, or several at
  once), `delete_x`.
- the track's two round trips keep the names of what they do: `lock_for_track`,
  `record_track` (`tracks`); `tracks.batched` runs them for a whole PostgreSQL
  group-commit batch at once (`map_track_locks`, `insert_track_records`).

Writes that touch a customer's balances take the customer's row lock first
(`customers.find_customer(..., lock=True)` or `tracks.lock_for_track`), which
serializes them per customer on PostgreSQL (SQLite serializes all writers already).
"""
