"""Batch track against a real server process: a batch whose first attempts time out on
the client is charged once when it is sent again (the SDK's retries, then the app's own
retry with the same items), and one bad item fails alone."""

from __future__ import annotations

import httpx

from e2e.conftest import Servers
from e2e.harness import run_verify
from revenipe.client import RevenipeServerClient, TransportError

ITEMS = 600


def credits(client: RevenipeServerClient, customer: str) -> int:
    state = client.get_customer(customer)
    return int({k["key_id"]: k["remaining"] for k in state["usage_keys"]}["credits"])


def test_a_batch_retried_after_client_time_outs_is_charged_once(servers: Servers) -> None:
    server = servers.start()
    customers = [f"batch-user-{i}" for i in range(6)]
    items = [
        {"customer": customers[i % 6], "id": "credits", "value": 1, "idempotency_key": f"k{i}"}
        for i in range(ITEMS)
    ]
    items.append({"customer": customers[0], "id": "credits", "value": -5, "idempotency_key": "x"})
    # A client that gives up long before the server is done, and retries twice.
    impatient = RevenipeServerClient(
        server.base_url,
        server.secret_key,
        timeout=httpx.Timeout(5.0, read=0.005),
        max_retries=2,
        retry_backoff=0,
    )
    try:
        impatient.track_batch(items)
        timed_out = False
    except TransportError:
        timed_out = True
    finally:
        impatient.close()
    assert timed_out, "the impatient client was meant to give up before the answer"
    # The app retries the whole batch, with the same idempotency keys, patiently.
    with RevenipeServerClient(server.base_url, server.secret_key, timeout=120) as patient:
        answer = patient.track_batch(items)
        answers = answer["items"]
        assert len(answers) == ITEMS + 1
        assert all(a["status"] == 200 and a["result"]["success"] for a in answers[:ITEMS])
        assert answers[ITEMS]["status"] == 400
        assert answers[ITEMS]["error"]["code"] == "invalid_value"
        # Every customer held exactly 100: a second charge of any item would have been
        # refused (insufficient_balance), so all 600 succeeding means each was charged
        # once, whether the abandoned attempts applied it (replayed) or this one did.
        for customer in customers:
            assert credits(patient, customer) == 100 - ITEMS // 6
        again = patient.track_batch(items)["items"]
        assert all(a["replayed"] for a in again[:ITEMS])
        for customer in customers:
            assert credits(patient, customer) == 100 - ITEMS // 6
    run_verify(server.database_url)
