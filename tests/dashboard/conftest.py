"""The dashboard in-process (SQLite and PostgreSQL): the whole server app over the
`backend` fixture, so the `clock` fixture is the dashboard's clock too."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import revenipe
from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings
from revenipe.services import operators as operator_service

from support import Clock

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PASSWORD = "a long enough password"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match is not None, html[:2000]
    return match.group(1)


@dataclass
class Dash:
    backend: revenipe.Backend
    http: TestClient
    clock: Clock
    app_id: str
    secret_key: str
    email: str
    """This test's operator (unique: operators are server-wide, the PostgreSQL
    database is shared by the session's tests)."""

    def url(self, path: str = "") -> str:
        return f"/dashboard/apps/{self.app_id}/{path}"

    def sign_in(self, email: str | None = None, password: str = PASSWORD) -> httpx.Response:
        form = self.http.get("/dashboard/sign-in")
        assert form.status_code == 200, form.text
        return self.http.post(
            "/dashboard/sign-in",
            data={
                "email": email or self.email,
                "password": password,
                "csrf_token": csrf_of(form.text),
            },
            follow_redirects=False,
        )

    def signed_in(self) -> str:
        """Sign in as the test's operator; the session's CSRF token."""
        response = self.sign_in()
        assert response.status_code == 303, response.text
        return csrf_of(self.http.get("/dashboard/").text)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(
            method, path, headers={"Authorization": f"Bearer {self.secret_key}"}, **kwargs
        )

    def customer(self, external_id: str) -> dict[str, Any]:
        """The API's answer for a customer (created by a token mint if new)."""
        path = f"/v1/customers/{quote(external_id, safe='')}"
        self.api("POST", f"{path}/tokens", json={})
        response = self.api("GET", path)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state


@pytest.fixture
def dash(backend: revenipe.Backend, clock: Clock, demo_catalog: revenipe.Catalog) -> Iterator[Dash]:
    created = backend.create_app("Dashboard test", demo_catalog)
    email = f"op-{uuid.uuid4().hex[:10]}@example.com"
    operator_service.create_operator(backend.context, email, PASSWORD)
    server = create_app(ServerSettings(database_url=backend.database.url), context=backend.context)
    # A client address of its own: failed sign-ins are counted per address, in the
    # database the session's PostgreSQL tests share.
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    # Not entered as a context manager: no lifespan, so no webhook delivery worker.
    http = TestClient(server, client=(address, 50000))
    yield Dash(backend, http, clock, created.app.id, created.secret_key, email)
