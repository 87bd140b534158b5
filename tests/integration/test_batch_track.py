"""Batch track on real storage (SQLite and PostgreSQL): each item decided as a single
track, answered in order, a retried batch charged once, one bad item failing alone
(docs/concepts/track.md#batch-track)."""

from __future__ import annotations

import threading

import pytest

import revenipe
from revenipe import BatchItem, BatchOutcome, ErrorCode, RefusalCode, RevenipeError

from support import DEMO_CATALOG, assert_verified

PRICED_CATALOG = DEMO_CATALOG.replace(
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n",
    "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
    "    costs: {image_generation: 5, huge_job: 1125899906842624}\n",
)


@pytest.fixture
def app(backend: revenipe.Backend) -> revenipe.App:
    created = backend.create_app("batch", revenipe.load_catalog(PRICED_CATALOG))
    return backend.app(created.app.id)


def credits(app: revenipe.App, customer: str) -> int:
    (key,) = [k for k in app.state(customer).usage_keys if k.key_id == "credits"]
    return key.remaining


def customers(app: revenipe.App) -> set[str]:
    found = set()
    for name in ("alice", "bob", "carol", "dave"):
        try:
            app.state(name)
        except RevenipeError as exc:
            assert exc.code is ErrorCode.CUSTOMER_NOT_FOUND
        else:
            found.add(name)
    return found


def results(outcomes: list[BatchOutcome]) -> list[revenipe.TrackResult]:
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    return [o.result for o in outcomes if o.result is not None]


def test_items_are_tracked_in_order_per_customer(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    items = [
        BatchItem("alice", "credits", 60, "a1"),
        BatchItem("bob", "monthly_credits", 1, "b1"),
        BatchItem("alice", "credits", 50, "a2"),  # 40 left: refused
        BatchItem("alice", "image_generation", 8, "a3"),  # 40: all of it
        BatchItem("bob", "export_hd", 1, "b2"),
    ]
    answers = results(app.track_batch(items))
    assert [(r.success, r.consumed, r.remaining, r.error) for r in answers] == [
        (True, 60, 40, None),
        (True, 1, 99, None),
        (False, 0, 40, RefusalCode.INSUFFICIENT_BALANCE),
        (True, 40, 0, None),
        (False, 0, 0, RefusalCode.NOT_METERED),
    ]
    assert [r.entitlement_id for r in answers] == [i.id for i in items]
    assert not any(r.replayed for r in answers)
    assert len({r.usage_event_id for r in answers}) == len(items)
    assert (credits(app, "alice"), credits(app, "bob")) == (0, 99)
    assert_verified(backend, app.app_id)


def test_a_retried_batch_is_charged_once(backend: revenipe.Backend, app: revenipe.App) -> None:
    items = [BatchItem(c, "credits", 7, f"{c}-1") for c in ("alice", "bob", "carol")]
    items.append(BatchItem("alice", "image_generation", 2, "alice-2"))
    first = results(app.track_batch(items))
    # The client timed out and sends the whole batch again.
    again = results(app.track_batch(items))
    assert [r.replayed for r in again] == [True] * len(items)
    assert [r.usage_event_id for r in again] == [r.usage_event_id for r in first]
    assert [r.remaining for r in again] == [r.remaining for r in first]
    assert (credits(app, "alice"), credits(app, "bob"), credits(app, "carol")) == (83, 93, 93)
    # A retry that adds items applies only the new ones.
    bigger = results(app.track_batch([*items, BatchItem("dave", "credits", 1, "dave-1")]))
    assert [r.replayed for r in bigger] == [True] * len(items) + [False]
    assert credits(app, "alice") == 83
    assert_verified(backend, app.app_id)


def test_one_bad_item_answers_its_error_and_the_others_apply(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    app.track("alice", "credits", 1, idempotency_key="used")
    items = [
        BatchItem("alice", "credits", 10, "ok-1"),
        BatchItem("alice", "credits", -1, "bad-value"),
        BatchItem("bob", "credits", 5.0, "float"),
        BatchItem("bob", "credits", "5", "string"),
        BatchItem("bob", "credits", 2**53, "huge"),
        BatchItem("bob", "Credits!", 1, "bad-id"),
        BatchItem("bob", "huge_job", 8, "overflow"),
        BatchItem("", "credits", 1, "no-customer"),
        BatchItem("alice", "monthly_credits", 3, "used"),  # the key of another track
        BatchItem("bob", "credits", 1, ""),
        BatchItem("carol", "no_such_thing", 1, "refused"),
        BatchItem("bob", "credits", 20, "ok-2"),
    ]
    outcomes = app.track_batch(items)
    codes = [o.error.code if o.error else None for o in outcomes]
    assert codes == [
        None,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_ID,
        ErrorCode.INVALID_VALUE,
        ErrorCode.INVALID_ID,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ErrorCode.INVALID_ID,
        None,
        None,
    ]
    ok = [o.result for o in outcomes if o.result is not None]
    assert [(r.success, r.error) for r in ok] == [
        (True, None),
        (False, RefusalCode.UNKNOWN_ENTITLEMENT),
        (True, None),
    ]
    assert (credits(app, "alice"), credits(app, "bob")) == (89, 80)
    assert_verified(backend, app.app_id)


@pytest.mark.parametrize(
    ("size", "fragment"), [(0, "at least one item"), (1001, "at most 1000 items")]
)
def test_a_batch_too_small_or_too_large_applies_nothing(
    app: revenipe.App, size: int, fragment: str
) -> None:
    items = [BatchItem(f"c{i % 3}", "credits", 1, f"k{i}") for i in range(size)]
    with pytest.raises(RevenipeError) as raised:
        app.track_batch(items)
    assert raised.value.code is ErrorCode.INVALID_BATCH
    assert fragment in raised.value.message
    assert customers(app) == set()


def test_an_item_without_a_key_refuses_the_whole_batch(app: revenipe.App) -> None:
    items = [BatchItem("alice", "credits", 1, "k1"), BatchItem("bob", "credits", 1, None)]
    with pytest.raises(RevenipeError) as raised:
        app.track_batch(items)
    assert raised.value.code is ErrorCode.INVALID_BATCH
    assert raised.value.field == "items[1].idempotency_key"
    assert customers(app) == set()


def test_one_key_twice_in_a_batch_is_one_track(app: revenipe.App) -> None:
    items = [
        BatchItem("alice", "credits", 4, "same"),
        BatchItem("alice", "credits", 4, "same"),
        BatchItem("alice", "credits", 5, "same"),
        BatchItem("bob", "credits", 4, "same"),  # keys are per customer
    ]
    outcomes = app.track_batch(items)
    first, second, third, fourth = outcomes
    assert first.result is not None and not first.result.replayed
    assert second.result is not None and second.result.replayed
    assert second.result.usage_event_id == first.result.usage_event_id
    assert third.error is not None and third.error.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert fourth.result is not None and fourth.result.success
    assert (credits(app, "alice"), credits(app, "bob")) == (96, 96)


def test_a_large_batch_spans_transactions(backend: revenipe.Backend, app: revenipe.App) -> None:
    items = [BatchItem(f"user-{i % 40}", "credits", 1 + i % 3, f"k{i}") for i in range(1000)]
    answers = results(app.track_batch(items))
    assert all(r.success for r in answers)
    spent: dict[str, int] = {}
    for item in items:
        spent[item.customer] = spent.get(item.customer, 0) + item.value
    for customer, total in spent.items():
        assert credits(app, customer) == 100 - total
    # Each customer's answers count down in the order of the items.
    for customer in spent:
        mine = [r.remaining for i, r in zip(items, answers, strict=True) if i.customer == customer]
        assert mine == sorted(mine, reverse=True)
    assert_verified(backend, app.app_id)


def test_the_same_batch_sent_twice_at_once_is_charged_once(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    items = [BatchItem(f"user-{i % 5}", "credits", 1, f"k{i}") for i in range(200)]
    answers: list[list[BatchOutcome]] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            answers.append(app.track_batch(items))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    one, other = (results(a) for a in answers)
    assert [r.usage_event_id for r in one] == [r.usage_event_id for r in other]
    for index in range(5):
        assert credits(app, f"user-{index}") == 60
    assert_verified(backend, app.app_id)
