"""The outbound webhook API over HTTP (in-process): shapes, the SSRF guard without
`--allow-private-webhooks`, authorization, apps kept apart, hostile strings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import revenipe
from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings
from server.conftest import TestClient, assert_error, ok

from support import DEMO_CATALOG


def _app(backend: revenipe.Backend, name: str) -> dict[str, str]:
    created = backend.create_app(name, revenipe.load_catalog(DEMO_CATALOG))
    return {"Authorization": f"Bearer {created.secret_key}"}


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost:8443/hook",
        "http://127.0.0.1:9/plain-http",
    ],
)
def test_private_targets_are_refused_without_the_flag(
    backend: revenipe.Backend, http: TestClient, url: str
) -> None:
    key = _app(backend, "ssrf")
    answer = http.post("/v1/webhook_endpoints", json={"url": url}, headers=key)
    assert_error(answer, 400, "unsafe_webhook_url")
    assert ok(http.get("/v1/webhook_endpoints", headers=key)) == {"endpoints": []}


@pytest.fixture
def local_http(backend: revenipe.Backend, server_settings: ServerSettings) -> Any:
    settings = replace(server_settings, allow_private_webhooks=True)
    with TestClient(create_app(settings, context=backend.context)) as client:
        yield client


def test_endpoint_lifecycle(backend: revenipe.Backend, local_http: TestClient) -> None:
    key, other = _app(backend, "one"), _app(backend, "two")
    hostile = "<script>alert(1)</script>\u202e\n' OR 1=1 -- \U0001f4a5"
    nul = local_http.post(
        "/v1/webhook_endpoints",
        json={"url": "http://127.0.0.1:9/h", "description": "a\u0000b"},
        headers=key,
    )
    assert_error(nul, 400, "invalid_argument")
    created = ok(
        local_http.post(
            "/v1/webhook_endpoints",
            json={"url": "http://127.0.0.1:9/h?x=<b>", "description": hostile},
            headers=key,
        ),
        201,
    )
    assert set(created) == {"id", "url", "event_types", "enabled", "secret"}
    assert created["event_types"] is None and created["enabled"] is True
    assert created["secret"].startswith("whsec_")
    endpoint_id = created["id"]
    path = f"/v1/webhook_endpoints/{endpoint_id}"
    shown = ok(local_http.get(path, headers=key))
    assert "secret" not in shown and shown["description"] == hostile
    assert_error(local_http.get(path, headers=other), 404, "webhook_endpoint_not_found")
    assert_error(local_http.get(path), 401)
    changed = ok(
        local_http.patch(
            path, json={"event_types": ["usage.exhausted"], "enabled": False}, headers=key
        )
    )
    assert changed["event_types"] == ["usage.exhausted"] and changed["enabled"] is False
    assert changed["disabled_reason"] == "disabled by the app"
    unknown = local_http.patch(path, json={"event_types": ["usage.<x>"]}, headers=key)
    assert_error(unknown, 400, "invalid_argument")
    rotated = ok(local_http.post(f"{path}/rotate_secret", headers=key))
    assert rotated["secret"] != created["secret"]
    ping = ok(local_http.post(f"{path}/test", headers=key), 202)
    events = ok(local_http.get("/v1/events", params={"after": 0}, headers=key))["events"]
    assert [e["id"] for e in events] == [ping["event_id"]]
    assert events[0]["body"]["type"] == "ping"
    assert ok(local_http.get("/v1/events", headers=other))["events"] == []
    (delivery,) = ok(local_http.get(f"{path}/deliveries", headers=key))["deliveries"]
    assert delivery["event_id"] == ping["event_id"]
    assert_error(
        local_http.post(f"/v1/webhook_deliveries/{delivery['id']}/redeliver", headers=other),
        404,
        "webhook_delivery_not_found",
    )
    assert (
        local_http.post(
            f"/v1/webhook_deliveries/{delivery['id']}/redeliver", headers=key
        ).status_code
        == 202
    )
    assert local_http.delete(path, headers=key).status_code == 204
    assert_error(local_http.get(path, headers=key), 404, "webhook_endpoint_not_found")
