"""What browser tests share besides fixtures: the running server's handle, Chromium's
path and flags, signing in through a one-time link."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import revenipe
from e2e.harness import Server
from revenipe.services import operators as operator_service

from support import installed

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SETUP_LINK_PREFIX = "Dashboard set-up link (one use, 24 hours):"
OPERATOR_EMAIL = "operator@example.com"
OPERATOR_PASSWORD = "a long operator password"


def chromium_path() -> str:
    return installed("chromium")


@dataclass
class Live:
    """A running server with its database, the app its first start created, and an
    operator (created in-process on the same database)."""

    server: Server
    database_url: str
    database: str
    """"sqlite" or "postgresql" (the screenshots' folder)."""
    setup_link: str | None
    backend: revenipe.Backend
    operator_email: str = OPERATOR_EMAIL
    operator_password: str = OPERATOR_PASSWORD
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def app_id(self) -> str:
        return self.server.app_id

    def dashboard(self, path: str = "") -> str:
        """The absolute URL of a dashboard page: `live.dashboard("apps/x/customers")`."""
        return f"{self.base_url}/dashboard/{path}"

    def app_page(self, path: str = "") -> str:
        return self.dashboard(f"apps/{self.app_id}/{path}")

    def sign_in_link(self, email: str | None = None) -> str:
        """A fresh one-time link for the operator (or a set-up link with none yet)."""
        issued = operator_service.create_sign_in_link(
            self.backend.context, email or self.operator_email
        )
        return self.dashboard(f"link/{issued.token}")

    def api(self) -> httpx.Client:
        """The server API with the app's secret key."""
        return self.server.api()


def sign_in_with_link(page: Any, link: str) -> None:
    """Open a one-time link and press its button; lands on the dashboard."""
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/")
