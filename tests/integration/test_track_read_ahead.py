"""On PostgreSQL a track reads its candidate grants in the lock's round trip, chosen by
the newest catalog the process has seen (services/usage/track.py, docs/adr/0015). The
read-ahead must be used only when it is right: the catalog current, nothing caught up
since, the same entitlements and access source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import revenipe
from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage import grants as grant_store

from support import DEMO_CATALOG, Clock


@pytest.fixture
def grant_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...] | None]]:
    """The entitlement ids of every separate candidate-grant read of a track."""
    seen: list[tuple[str, ...] | None] = []
    original = grant_store.list_active_grants

    def spy(conn: Any, customer_id: str, **kwargs: Any) -> Any:
        ids = kwargs.get("entitlement_ids")
        seen.append(tuple(ids) if ids is not None else None)
        return original(conn, customer_id, **kwargs)

    monkeypatch.setattr(grant_store, "list_active_grants", spy)
    yield seen


def test_the_second_track_reads_its_grants_with_the_lock(
    app: revenipe.App, backend: revenipe.Backend, grant_reads: list[tuple[str, ...] | None]
) -> None:
    app.login("u1")
    assert app.track("u1", "credits", 1).success
    grant_reads.clear()
    second = app.track("u1", "credits", 2)
    assert second.success and second.remaining == 97
    on_postgres = not backend.context.db.is_sqlite
    assert grant_reads == (
        [] if on_postgres else [("monthly_credits", "bonus_credits", "purchased_credits")]
    )


def test_a_new_catalog_version_discards_the_read_ahead(
    app: revenipe.App, grant_reads: list[tuple[str, ...] | None]
) -> None:
    app.login("u1")
    app.grant_entitlement("u1", "purchased_credits", 40)
    assert app.track("u1", "credits", 1).success  # the process now knows version 1
    # Version 2: `credits` draws on purchased credits only.
    app.apply_catalog(
        revenipe.load_catalog(
            DEMO_CATALOG.replace(
                "entitlements: [monthly_credits, bonus_credits, purchased_credits]",
                "entitlements: [purchased_credits]",
            )
        )
    )
    grant_reads.clear()
    result = app.track("u1", "credits", 5)
    assert result.success
    # Drawn from the 40 purchased credits (the free tier's 99 are not part of it now).
    assert result.remaining == 35
    assert grant_reads == [("purchased_credits",)]


def test_a_catch_up_discards_the_read_ahead(
    app: revenipe.App, clock: Clock, grant_reads: list[tuple[str, ...] | None]
) -> None:
    app.login("u1")
    held = app.reserve("u1", "credits", 60, ttl_seconds=10)
    assert held.success
    assert app.track("u1", "credits", 1).remaining == 39
    clock.advance(seconds=11)
    grant_reads.clear()
    # The hold expired: catching up gave its 60 back before this track decided.
    assert app.track("u1", "credits", 1).remaining == 98
    # The track read its grants again after catching up (the hold's release read them
    # too, before).
    assert grant_reads[-1] == ("monthly_credits", "bonus_credits", "purchased_credits")
    assert len(grant_reads) >= 2


def test_a_track_of_one_source_reads_that_source(
    app: revenipe.App, grant_reads: list[tuple[str, ...] | None]
) -> None:
    app.login("u1")
    pack = app.grant_product("u1", "pack_50")
    assert app.track("u1", "credits", 1).success
    result = app.track("u1", "credits", 5, access_source_id=pack.access_source_id)
    assert result.success and result.remaining == 45
    assert app.track("u1", "credits", 1, access_source_id=pack.access_source_id).remaining == 44


def test_a_reused_key_is_answered_before_an_overflowing_price(backend: revenipe.Backend) -> None:
    """Reading ahead prices the action before the lock; an amount it cannot price must
    still get the answer the key deserves first (found by the stateful model)."""
    text = DEMO_CATALOG.replace(
        "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
        "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
        "    costs: {huge_job: 1125899906842624}\n",
    )
    app = backend.app(backend.create_app("priced", revenipe.load_catalog(text)).app.id)
    assert app.track("u1", "credits", 1, idempotency_key="k1").success
    assert app.track("u1", "credits", 1, idempotency_key="k2").success  # the catalog is known
    with pytest.raises(RevenipeError) as refused:
        app.track("u1", "huge_job", 8, idempotency_key="k1")
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    with pytest.raises(RevenipeError) as overflow:
        app.track("u1", "huge_job", 8, idempotency_key="k3")
    assert overflow.value.code is ErrorCode.INVALID_VALUE
