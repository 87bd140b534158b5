"""The bench's raw-SQL callers connect with libpq's URL form, without revenipe's own
options (`?prepare=off` for a pooler, storage/postgres_engine), which libpq refuses."""

from __future__ import annotations

from revenipe.bench.databases import libpq_url


def test_libpq_url_drops_revenipe_options_and_keeps_the_rest() -> None:
    assert (
        libpq_url("postgresql+psycopg://u:p%40ss@db.example:6432/bench?prepare=off&sslmode=require")
        == "postgresql://u:p%40ss@db.example:6432/bench?sslmode=require"
    )
    assert libpq_url("postgres://u@h/d") == "postgresql://u@h/d"
    assert libpq_url("postgresql://u@h:5432/d?prepare=on") == "postgresql://u@h:5432/d"
