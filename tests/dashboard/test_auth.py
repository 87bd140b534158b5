"""Who may see the dashboard: sessions, cookies, CSRF, the limit on failed sign-ins,
one-time links, expiry (in-process, on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from revenipe.engine.errors import RevenipeError
from revenipe.services import operators as operator_service
from revenipe.storage.schema import operator_sessions, operators

from .conftest import PASSWORD, Dash, csrf_of


def test_pages_need_a_session(dash: Dash) -> None:
    response = dash.http.get(dash.url("customers"), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/sign-in?next={dash.url('customers')}"


def test_password_sign_in_sets_a_safe_cookie_and_returns_where_asked(dash: Dash) -> None:
    form = dash.http.get("/dashboard/sign-in", params={"next": dash.url("customers")})
    response = dash.http.post(
        "/dashboard/sign-in",
        data={
            "email": dash.email.upper(),
            "password": PASSWORD,
            "next": dash.url("customers"),
            "csrf_token": csrf_of(form.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == dash.url("customers")
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("revenipe_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert dash.http.get(dash.url("customers")).status_code == 200


def test_the_session_cookie_is_secure_over_https(dash: Dash) -> None:
    form = dash.http.get("https://testserver/dashboard/sign-in")
    response = dash.http.post(
        "https://testserver/dashboard/sign-in",
        data={"email": dash.email, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("revenipe_session=")
    )
    assert "Secure" in cookie


@pytest.mark.parametrize("next_page", ["//evil.example/", "https://evil.example/", "/v1/apps"])
def test_sign_in_never_redirects_off_the_dashboard(dash: Dash, next_page: str) -> None:
    form = dash.http.get("/dashboard/sign-in")
    response = dash.http.post(
        "/dashboard/sign-in",
        data={
            "email": dash.email,
            "password": PASSWORD,
            "next": next_page,
            "csrf_token": csrf_of(form.text),
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/dashboard/"


def test_secrets_are_stored_hashed(dash: Dash) -> None:
    dash.signed_in()
    token = dash.http.cookies["revenipe_session"]
    with dash.backend.database.read() as conn:
        hashes = set(conn.execute(select(operator_sessions.c.token_hash)).scalars())
        password_hash = conn.execute(
            select(operators.c.password_hash).where(operators.c.email == dash.email)
        ).scalar_one()
    assert token not in hashes
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash


def test_wrong_password_and_unknown_email_read_alike(dash: Dash) -> None:
    wrong = dash.sign_in(password="not the password at all")
    unknown = dash.sign_in(email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong email or password" in wrong.text
    assert "wrong email or password" in unknown.text
    assert "revenipe_session" not in dash.http.cookies


def test_five_failures_lock_the_email_for_fifteen_minutes(dash: Dash) -> None:
    for _ in range(5):
        assert dash.sign_in(password="wrong password!").status_code == 401
    locked = dash.sign_in()  # even the right password: the email is locked
    assert locked.status_code == 429
    retry_after = int(locked.headers["retry-after"])
    assert 0 < retry_after <= 15 * 60 + 1
    assert "Too many failed sign-ins" in locked.text
    dash.clock.advance(seconds=retry_after)
    assert dash.sign_in().status_code == 303


def test_twenty_failures_from_one_address_lock_it(dash: Dash) -> None:
    for attempt in range(20):
        assert dash.sign_in(email=f"guess{attempt}@example.com").status_code == 401
    assert dash.sign_in().status_code == 429
    dash.clock.advance(minutes=16)
    assert dash.sign_in().status_code == 303


def test_the_limit_is_kept_in_the_database_for_every_process(dash: Dash) -> None:
    for _ in range(5):
        with pytest.raises(operator_service.SignInRefused):
            operator_service.sign_in_with_password(
                dash.backend.context, dash.email, "wrong password!", "192.0.2.1"
            )
    # Another process (here: another client address, the same database) is refused too.
    assert dash.sign_in().status_code == 429


def test_a_post_without_the_sessions_csrf_token_is_refused(dash: Dash) -> None:
    csrf = dash.signed_in()
    state = dash.customer("csrf-target")
    action = dash.url(f"customers/{state['client_id']}/grant-credits")
    form = {"entitlement_id": "bonus_credits", "amount": "5"}
    assert dash.http.post(action, data=form, follow_redirects=False).status_code == 403
    refused = dash.http.post(
        action, data={**form, "csrf_token": csrf + "x"}, follow_redirects=False
    )
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    cross_site = dash.http.post(
        action,
        data={**form, "csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross_site.status_code == 403
    assert dash.customer("csrf-target") == state  # nothing was granted
    accepted = dash.http.post(action, data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert accepted.status_code == 303


def test_another_sessions_csrf_token_is_refused(dash: Dash) -> None:
    first = dash.signed_in()
    dash.http.cookies.clear()
    second = dash.signed_in()
    assert first != second
    refused = dash.http.post(
        "/dashboard/sign-out", data={"csrf_token": first}, follow_redirects=False
    )
    assert refused.status_code == 403


def test_the_sign_in_form_needs_its_own_token(dash: Dash) -> None:
    response = dash.http.post(
        "/dashboard/sign-in",
        data={"email": dash.email, "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 403


def test_sessions_expire_after_twelve_hours(dash: Dash) -> None:
    dash.signed_in()
    dash.clock.advance(hours=12, seconds=-1)
    assert dash.http.get(dash.url("customers")).status_code == 200
    dash.clock.advance(seconds=1)
    response = dash.http.get(dash.url("customers"), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/sign-in")


def test_sign_out_ends_the_session_on_the_server(dash: Dash) -> None:
    csrf = dash.signed_in()
    token = dash.http.cookies["revenipe_session"]
    response = dash.http.post(
        "/dashboard/sign-out", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    # A copy of the cookie taken before signing out signs nobody in.
    dash.http.cookies.set("revenipe_session", token, path="/dashboard")
    again = dash.http.get(dash.url("customers"), follow_redirects=False)
    assert again.status_code == 303


def test_a_link_signs_in_once(dash: Dash) -> None:
    issued = operator_service.create_sign_in_link(dash.backend.context, dash.email)
    page = dash.http.get(f"/dashboard/link/{issued.token}")
    assert page.status_code == 200
    assert dash.email in page.text
    used = dash.http.post(
        f"/dashboard/link/{issued.token}",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert used.status_code == 303
    assert dash.http.get(dash.url("customers")).status_code == 200
    dash.http.cookies.clear()
    assert dash.http.get(f"/dashboard/link/{issued.token}").status_code == 410
    form = dash.http.get("/dashboard/sign-in")
    again = dash.http.post(
        f"/dashboard/link/{issued.token}",
        data={"csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert again.status_code == 410


def test_a_link_expires(dash: Dash) -> None:
    issued = operator_service.create_sign_in_link(dash.backend.context, dash.email, ttl_seconds=60)
    dash.clock.advance(seconds=60)
    assert dash.http.get(f"/dashboard/link/{issued.token}").status_code == 410
    assert operator_service.inspect_link(dash.backend.context, issued.token) is None


def test_a_link_names_its_operator_when_there_are_several(dash: Dash) -> None:
    operator_service.create_operator(dash.backend.context, f"2-{dash.email}", PASSWORD)
    with pytest.raises(RevenipeError, match="several operators"):
        operator_service.create_sign_in_link(dash.backend.context)
    with pytest.raises(RevenipeError, match="no operator"):
        operator_service.create_sign_in_link(dash.backend.context, "nobody@example.com")


def test_operator_accounts_are_checked(dash: Dash) -> None:
    context = dash.backend.context
    with pytest.raises(RevenipeError, match="exists"):
        operator_service.create_operator(context, dash.email.upper(), PASSWORD)
    with pytest.raises(RevenipeError, match="characters"):
        operator_service.create_operator(context, "short@example.com", "short")
    with pytest.raises(RevenipeError, match="email"):
        operator_service.create_operator(context, "not an email", PASSWORD)
    with pytest.raises(RevenipeError, match="time zone"):
        operator_service.create_operator(
            context, "tz@example.com", PASSWORD, time_zone="Mars/Olympus"
        )


def test_pages_carry_security_headers(dash: Dash) -> None:
    dash.signed_in()
    response = dash.http.get(dash.url("customers"))
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "same-origin"
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text)  # no inline script
