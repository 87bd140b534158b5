"""Provider events received (webhooks, and events read back from providers): table
`webhook_events`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from revenipe.storage.driver_sql import Columns, Sql, execute, fetch_all, fetch_one
from revenipe.storage.schema import webhook_events


@dataclass(frozen=True, slots=True)
class WebhookEventRow:
    app_id: str
    provider: str
    event_id: str
    type: str
    outcome: str
    detail: str | None
    received_at: datetime
    subject: str | None = None
    occurred_at: datetime | None = None


_COLUMNS = Columns(
    webhook_events,
    (
        "app_id",
        "provider",
        "event_id",
        "type",
        "outcome",
        "detail",
        "received_at",
        "subject",
        "occurred_at",
    ),
)
_KEY = "app_id = %(app_id)s AND provider = %(provider)s AND event_id = %(event_id)s"
_INSERT_IF_NEW = _COLUMNS.insert("ON CONFLICT DO NOTHING RETURNING event_id")
_GET = Sql(f"SELECT {_COLUMNS.select} FROM webhook_events WHERE {_KEY}")
_LIST_ABOUT = Sql(
    f"SELECT {_COLUMNS.select} FROM webhook_events WHERE app_id = %(app_id)s "
    "AND provider = %(provider)s AND subject = %(subject)s ORDER BY occurred_at, event_id"
)
_UPDATE_OUTCOME = Sql(
    f"UPDATE webhook_events SET outcome = %(outcome)s, detail = %(detail)s WHERE {_KEY}"
)


def insert_webhook_event_if_new(
    conn: Connection,
    app_id: str,
    provider: str,
    event_id: str,
    event_type: str,
    outcome: str,
    detail: str | None,
    now: datetime,
    *,
    subject: str | None = None,
    occurred_at: datetime | None = None,
) -> bool:
    """Remember a provider event; False if it was recorded before (apply it only once).

    Called in the transaction that applies the event, so the event and its effects
    commit together or not at all. `subject` and `occurred_at` (what it is about, when
    it happened) let `list_webhook_events_about` read a subject's events back in order.
    """
    event = WebhookEventRow(
        app_id, provider, event_id, event_type, outcome, detail, now, subject, occurred_at
    )
    return fetch_one(conn, _INSERT_IF_NEW, _COLUMNS.params(conn, event)) is not None


def get_webhook_event(
    conn: Connection, app_id: str, provider: str, event_id: str
) -> WebhookEventRow | None:
    params = {"app_id": app_id, "provider": provider, "event_id": event_id}
    row = fetch_one(conn, _GET, params)
    return WebhookEventRow(**_COLUMNS.read(row)) if row is not None else None


def list_webhook_events_about(
    conn: Connection, app_id: str, provider: str, subject: str
) -> list[WebhookEventRow]:
    """Every recorded event of one subject, in the order they happened (then by id)."""
    params = {"app_id": app_id, "provider": provider, "subject": subject}
    return [WebhookEventRow(**_COLUMNS.read(r)) for r in fetch_all(conn, _LIST_ABOUT, params)]


def update_webhook_outcome(
    conn: Connection, app_id: str, provider: str, event_id: str, outcome: str, detail: str | None
) -> None:
    params = {"app_id": app_id, "provider": provider, "event_id": event_id}
    execute(conn, _UPDATE_OUTCOME, {**params, "outcome": outcome, "detail": detail})
