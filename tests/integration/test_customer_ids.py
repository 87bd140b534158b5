"""A track naming its customer by external id locks it by the id its process remembered
(services/context.py `CustomerIds`): the remembered id never makes a track charge
another customer, of this app or of another, and one that names nobody any more (a
database replaced under a running process) falls back to the external id."""

from __future__ import annotations

import revenipe
from revenipe.services.context import CustomerIds

from support import DEMO_CATALOG


def _app(backend: revenipe.Backend, name: str) -> revenipe.App:
    return backend.app(backend.create_app(name, revenipe.load_catalog(DEMO_CATALOG)).app.id)


def _credits(app: revenipe.App, customer: str) -> int:
    (credits,) = [key for key in app.state(customer).usage_keys if key.key_id == "credits"]
    return credits.remaining


def test_later_tracks_use_the_id_the_first_found(backend: revenipe.Backend) -> None:
    app = _app(backend, "ids")
    app.grant_entitlement("alice", "monthly_credits", 10)
    first = app.track("alice", "credits", 1)
    assert app.context.customer_ids.get(app.app_id, "alice") == first.customer_id
    second = app.track("alice", "credits", 1)
    assert second.customer_id == first.customer_id
    assert second.remaining == first.remaining - 1


def test_a_remembered_id_that_names_nobody_falls_back_to_the_external_id(
    backend: revenipe.Backend,
) -> None:
    app = _app(backend, "ids")
    app.grant_entitlement("alice", "monthly_credits", 10)
    before = _credits(app, "alice")
    app.context.customer_ids.remember(app.app_id, "alice", "cus_gone")
    result = app.track("alice", "credits", 3, idempotency_key="k")
    assert result.success
    assert result.remaining == before - 3
    assert app.context.customer_ids.get(app.app_id, "alice") == result.customer_id
    assert app.track("alice", "credits", 3, idempotency_key="k").replayed


def test_another_apps_customer_is_never_charged_through_a_remembered_id(
    backend: revenipe.Backend,
) -> None:
    ours, theirs = _app(backend, "ours"), _app(backend, "theirs")
    ours.grant_entitlement("alice", "monthly_credits", 10)
    theirs.grant_entitlement("mallory", "monthly_credits", 10)
    mallory = theirs.track("mallory", "credits", 1).customer_id
    assert mallory is not None
    alice_before, mallory_before = _credits(ours, "alice"), _credits(theirs, "mallory")
    ours.context.customer_ids.remember(ours.app_id, "alice", mallory)
    result = ours.track("alice", "credits", 4)
    assert result.success
    assert result.customer_id != mallory
    assert _credits(ours, "alice") == alice_before - 4
    assert _credits(theirs, "mallory") == mallory_before


def test_a_new_customer_created_by_its_first_track_is_remembered(
    backend: revenipe.Backend,
) -> None:
    app = _app(backend, "ids")
    created = app.track("newcomer", "credits", 1)  # created by it, with the free tier
    assert app.context.customer_ids.get(app.app_id, "newcomer") == created.customer_id


def test_the_memory_starts_again_empty_when_full() -> None:
    ids = CustomerIds(limit=2)
    ids.remember("app", "a", "cus_a")
    ids.remember("app", "b", "cus_b")
    ids.remember("app", "b", "cus_b")  # already there: nothing dropped
    assert ids.get("app", "a") == "cus_a"
    ids.remember("app", "c", "cus_c")
    assert (ids.get("app", "a"), ids.get("app", "c")) == (None, "cus_c")
    off = CustomerIds(limit=0)
    off.remember("app", "a", "cus_a")
    assert off.get("app", "a") is None
