"""The settings page in-process: secret keys shown once and revoked, the token policy,
the sandbox clock, webhook endpoints and their deliveries, the operator's time zone."""

from __future__ import annotations

import html
import re

import markupsafe

from revenipe.services import apps as app_service
from revenipe.services.outbound import endpoints as endpoint_service
from revenipe.services.outbound.targets import TargetPolicy

from .conftest import Dash


def _flash(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="flash flash-\w+"[^>]*>([^<]*)<', page)]


def test_a_new_secret_key_is_shown_once_and_works(dash: Dash) -> None:
    csrf = dash.signed_in()
    created = dash.http.post(dash.url("settings/keys"), data={"csrf_token": csrf})
    assert created.status_code == 200
    key = re.search(r'id="new-secret-key">.*?<code>(sk_[^<]+)</code>', created.text, re.S)
    assert key is not None
    secret_key = html.unescape(key.group(1))
    listed = dash.http.get("/v1/customers", headers={"Authorization": f"Bearer {secret_key}"})
    assert listed.status_code == 200
    again = dash.http.get(dash.url("settings")).text
    assert secret_key not in again and "new-secret-key" not in again
    assert len(app_service.list_secret_keys(dash.backend.context, dash.app_id)) == 2


def test_revoking_a_key(dash: Dash) -> None:
    csrf = dash.signed_in()
    key_id, secret_key = app_service.create_secret_key(dash.backend.context, dash.app_id)
    response = dash.http.post(dash.url(f"settings/keys/{key_id}/revoke"), data={"csrf_token": csrf})
    assert _flash(response.text) == [
        f"Secret key {key_id} revoked: requests with it are refused from now on."
    ]
    assert app_service.app_for_secret_key(dash.backend.context, secret_key) is None
    twice = dash.http.post(dash.url(f"settings/keys/{key_id}/revoke"), data={"csrf_token": csrf})
    assert "no active secret key" in _flash(twice.text)[0]
    refused = dash.http.post(dash.url(f"settings/keys/{key_id}/revoke"))
    assert refused.status_code == 403


def test_token_policy(dash: Dash) -> None:
    csrf = dash.signed_in()
    response = dash.http.post(
        dash.url("settings/token-policy"), data={"token_policy": "open", "csrf_token": csrf}
    )
    assert _flash(response.text) == ["Token policy set to open."]
    assert "anyone who knows this app" in response.text
    assert app_service.get_app(dash.backend.context, dash.app_id).token_policy == "open"
    bad = dash.http.post(
        dash.url("settings/token-policy"), data={"token_policy": "lax", "csrf_token": csrf}
    )
    assert "must be 'enforce' or 'open'" in _flash(bad.text)[0]


def test_the_sandbox_clock_of_a_sandbox_app(dash: Dash) -> None:
    csrf = dash.signed_in()
    live = dash.http.get(dash.url("settings")).text
    assert "Move the sandbox clock forward" not in live
    sandbox = app_service.create_app(dash.backend.context, "Sandbox", sandbox=True).app
    path = f"/dashboard/apps/{sandbox.id}/settings"
    response = dash.http.post(path + "/clock", data={"days": "2", "hours": "3", "csrf_token": csrf})
    assert response.status_code == 200
    assert "Sandbox clock moved forward" in _flash(response.text)[0]
    assert app_service.get_app(dash.backend.context, sandbox.id).clock_offset_seconds == (
        2 * 86_400 + 3 * 3_600
    )
    backwards = dash.http.post(path + "/clock", data={"days": "-1", "csrf_token": csrf})
    assert "cannot be negative" in _flash(backwards.text)[0]


def test_webhook_endpoints_and_their_deliveries(dash: Dash) -> None:
    dash.signed_in()
    url = "http://127.0.0.1:9/<b>x</b>"
    created = endpoint_service.create_endpoint(
        dash.backend.context,
        dash.app_id,
        TargetPolicy(allow_private=True, require_https=False),
        url,
        description="<i>ops</i>",
    )
    endpoint_service.send_ping(dash.backend.context, dash.app_id, created.endpoint.id)
    settings = dash.http.get(dash.url("settings")).text
    assert str(markupsafe.escape(url)) in settings and url not in settings
    assert "&lt;i&gt;ops&lt;/i&gt;" in settings
    deliveries = dash.http.get(dash.url(f"settings/webhooks/{created.endpoint.id}"))
    assert deliveries.status_code == 200
    assert "ping" in deliveries.text and "pending" in deliveries.text
    missing = dash.http.get(dash.url("settings/webhooks/whe_nothing"))
    assert missing.status_code == 404


def test_the_operators_time_zone_changes_how_times_read(dash: Dash) -> None:
    csrf = dash.signed_in()
    dash.customer("tz-customer")
    before = dash.http.get(dash.url("customers")).text
    assert " UTC</time>" in before
    response = dash.http.post(
        dash.url("settings/time-zone"), data={"time_zone": "Asia/Tokyo", "csrf_token": csrf}
    )
    assert _flash(response.text) == ["Times are shown in Asia/Tokyo from now on."]
    assert " JST</time>" in dash.http.get(dash.url("customers")).text
    bad = dash.http.post(
        dash.url("settings/time-zone"), data={"time_zone": "Mars/Base", "csrf_token": csrf}
    )
    assert "IANA" in _flash(bad.text)[0]
