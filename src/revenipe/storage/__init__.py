"""Storage: the only layer that knows SQL and the two dialects (SQLite, PostgreSQL).

- `schema`: table definitions (the single source the migrations are written from).
- `database`: opening a database from a URL, connection settings, transactions,
  running migrations on first use.
- `repository`: every query the services need.
- `migrations/`: Alembic environment and versions.
"""
