"""PostgreSQL's cached plans, made again now and then (docs/adr/0023).

revenipe prepares each statement on the server once per connection (`pg_pipeline`,
docs/adr/0024), and PostgreSQL then keeps one generic plan for it, made with what it
knew of the tables at that moment, until something invalidates it: in practice an
ANALYZE, which autovacuum runs as tables grow. Plans made while the tables were nearly
empty pick among equal-looking indexes arbitrarily: the track's lock picked the
customers' index by app and filtered on the external id, and found the usage event
under an idempotency key with a scan of every usage event. Without an ANALYZE
(autovacuum off, or not yet come round on a new database) that plan stays, and a track
costs more with every track before it (in-process tracks fell from 1,030/s to 444/s
within 20,000).

So every pooled connection drops its cached plans (`DISCARD PLANS`) when it is checked
out `PLAN_REFRESH_S` or more after it last did: the next executions are planned again on
the tables as they are now. Prepared statements stay prepared (`pg_pipeline`'s
bookkeeping holds); what it costs is one round trip and a few plannings per connection
and interval. With autovacuum running this changes nothing: its ANALYZE already makes the
plans again.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

PLAN_REFRESH_S = 5.0
"""How old a connection's cached plans may get before it drops them. Once a table has
grown past the size where its indexes win, every later plan uses them: the interval
matters for a new database's first seconds, when a track costs some 70 us more for every
1,000 usage events behind a frozen plan (a round trip and a few plannings per connection
every 5 s cost nothing measurable)."""

_REFRESHED_AT = "revenipe_plans_at"
"""`ConnectionPoolEntry.info` key: when the connection's plans were last dropped."""


def plans_made_at(info: dict[Any, Any], default: float) -> float:
    """When a pooled connection last dropped its plans (`time.monotonic()`), from its
    pool entry's `info`; `default` if it never did (no refresh installed: statements are
    not prepared)."""
    made_at: float = info.get(_REFRESHED_AT, default)
    return made_at


def refresh_plans_now_and_then(engine: Engine) -> None:
    """Install the refresh on `engine`'s pool (PostgreSQL; `postgres_engine` does, when
    revenipe prepares its statements)."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        now = time.monotonic()
        refreshed_at = record.info.setdefault(_REFRESHED_AT, now)
        if now - refreshed_at < PLAN_REFRESH_S:
            return
        # Idle when checked out: this runs in a transaction of its own, ended here, so
        # the connection is handed on idle, as the pool gave it.
        try:
            dbapi_connection.execute("DISCARD PLANS")
            dbapi_connection.commit()
        except Exception as exc:
            # A connection the server dropped while it sat in the pool: the pool throws
            # it away and checks out another (or connects anew), as for any lost one.
            raise DisconnectionError(f"a pooled connection failed DISCARD PLANS: {exc}") from exc
        record.info[_REFRESHED_AT] = now
