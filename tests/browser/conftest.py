"""Browser fixtures: a real `revenipe serve` on each database, driven by Debian's
Chromium through Playwright's sync API.

One server and one browser per test module and database (starting them is most of a
test's cost); each test gets a fresh browser context, so cookies never leak between
tests. Chromium missing: the tests FAIL when the CI environment variable is set, and
are skipped otherwise (`scripts/setup --tests` installs it).

    def test_customers(live, operator_page, screenshot):
        page = operator_page()                       # signed in as live.operator_email
        page.goto(live.dashboard(f"apps/{live.app_id}/customers"))
        screenshot(page, "customers")                 # test-artifacts/screenshots/<db>/
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import revenipe
from browser.harness import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    OPERATOR_EMAIL,
    OPERATOR_PASSWORD,
    SETUP_LINK_PREFIX,
    Live,
    chromium_path,
    sign_in_with_link,
)
from e2e.harness import E2E_CATALOG, Servers
from revenipe.services import operators as operator_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def browser_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(kind, URL) of a fresh, empty database for this module's server."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path_factory.mktemp('browser') / 'dashboard.db'}"
        return
    session_url: str = request.getfixturevalue("postgres_url")
    name = f"revenipe_browser_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(session_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield "postgresql", f"{session_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def live(
    browser_database: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """`revenipe serve` on the module's database, with the e2e catalog; the set-up link
    its first start printed is kept (unused), and an operator is created."""
    chromium_path()  # no browser: skip (or fail on CI) before starting anything
    kind, url = browser_database
    catalog_file = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    catalog_file.write_text(E2E_CATALOG)
    servers = Servers(url, catalog_file)
    try:
        server = servers.start()
        setup_link = next(
            (
                line.split(SETUP_LINK_PREFIX, 1)[1].strip()
                for line in server.output
                if SETUP_LINK_PREFIX in line
            ),
            None,
        )
        with revenipe.open(url) as backend:
            operator_service.create_operator(
                backend.context, OPERATOR_EMAIL, OPERATOR_PASSWORD, time_zone="Europe/Paris"
            )
            yield Live(server, url, kind, setup_link, backend)
    finally:
        servers.stop_all()


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Any]:
    """One headless Chromium per module."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Pages in a fresh browser context (no cookies), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def operator_page(live: Live, new_page: Callable[[], Any]) -> Callable[[], Any]:
    """A page of a fresh context, signed in as the module's operator (by a link)."""

    def make() -> Any:
        page = new_page()
        sign_in_with_link(page, live.sign_in_link())
        return page

    return make


@pytest.fixture
def screenshot(live: Live) -> Callable[..., Path]:
    """Save a screenshot as test-artifacts/screenshots/<database>/<name>.png: the whole
    page, or what the window shows with `full_page=False`."""

    def take(page: Any, name: str, *, full_page: bool = True) -> Path:
        folder = ARTIFACTS / live.database
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
