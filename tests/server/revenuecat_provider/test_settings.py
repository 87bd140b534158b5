"""An app's RevenueCat settings through the server API: validated, never shown back, for
live apps only, other apps' untouched; on SQLite and PostgreSQL."""

from __future__ import annotations

import revenipe

from ..conftest import TestClient, assert_error, ok
from .conftest import RC_CATALOG

AUTHORIZATION = "Bearer " + "a" * 40


def _live(backend: revenipe.Backend, name: str = "live") -> tuple[str, dict[str, str]]:
    created = backend.create_app(name, revenipe.load_catalog(RC_CATALOG))
    return created.app.id, {"Authorization": f"Bearer {created.secret_key}"}


def test_settings_are_validated_kept_and_never_shown_back(
    backend: revenipe.Backend, http: TestClient
) -> None:
    app_id, headers = _live(backend)
    other_id, other = _live(backend, "other")
    url = f"http://testserver/v1/webhooks/revenuecat/{app_id}"
    assert ok(http.get("/v1/providers/revenuecat", headers=headers)) == {
        "configured": False,
        "webhook_url": url,
    }
    secret = "s" * 24
    for body in (
        {"authorization": "short"},
        {"authorization": f" {secret}"},  # a header value has no leading space
        {"authorization": f"{secret} "},
        {"authorization": f"Bearer {secret}\n"},
        {"authorization": f"Bearer {secret}\u00e9"},
        {"authorization": "x" * 501},
        {"authorization": 42},
        {"authorization": None},
        {},
        {"authorization": AUTHORIZATION, "extra": "typo"},
    ):
        answer = http.put("/v1/providers/revenuecat", json=body, headers=headers)
        assert_error(answer, 400)
        assert secret not in answer.text, answer.text
    put = http.put(
        "/v1/providers/revenuecat", json={"authorization": AUTHORIZATION}, headers=headers
    )
    assert ok(put) == {"configured": True, "webhook_url": url}
    shown = http.get("/v1/providers/revenuecat", headers=headers)
    assert ok(shown) == {"configured": True, "webhook_url": url}
    assert AUTHORIZATION not in put.text + shown.text
    assert ok(http.get("/v1/providers/revenuecat", headers=other))["configured"] is False
    # Replaced: the new value is the one compared.
    ok(http.put("/v1/providers/revenuecat", json={"authorization": "B" * 16}, headers=headers))
    removed = http.delete("/v1/providers/revenuecat", headers=headers)
    assert removed.status_code == 204 and removed.content == b""
    assert "content-type" not in removed.headers
    assert ok(http.get("/v1/providers/revenuecat", headers=headers))["configured"] is False
    again = http.delete("/v1/providers/revenuecat", headers=headers)
    assert again.status_code == 204, "removing twice is the same as once"
    assert_error(http.get("/v1/providers/revenuecat"), 401)
    assert_error(http.put("/v1/providers/revenuecat", json={"authorization": AUTHORIZATION}), 401)
    assert_error(http.delete("/v1/providers/revenuecat"), 401)
    assert other_id != app_id


def test_a_sandbox_app_never_takes_store_purchases(
    backend: revenipe.Backend, http: TestClient
) -> None:
    created = backend.create_app("sandbox", revenipe.load_catalog(RC_CATALOG), sandbox=True)
    headers = {"Authorization": f"Bearer {created.secret_key}"}
    answer = http.put(
        "/v1/providers/revenuecat", json={"authorization": AUTHORIZATION}, headers=headers
    )
    assert_error(answer, 409, "live_only")
    assert ok(http.get("/v1/providers/revenuecat", headers=headers))["configured"] is False
