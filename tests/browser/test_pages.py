"""The overview, analytics and catalog pages in a real browser: the catalog edited with
an error (shown at its line), fixed and applied as a new version, its diff; hostile
catalog names rendered as text; charts and tables filled by tracks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import revenipe
from browser.harness import Live
from revenipe.catalog import catalog_to_yaml
from revenipe.services import catalogs as catalog_service
from revenipe.services import rollups

HOSTILE_NAME = "</script><script>window.pwned = 1; alert('catalog')</script>"
HOSTILE_PRODUCT = "<img src=x onerror=\"window.pwned = 2; alert('product')\">"


def _no_dialogs(page: Any) -> list[str]:
    opened: list[str] = []

    def on_dialog(dialog: Any) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return opened


def _current_version(live: Live) -> int:
    version, _ = catalog_service.get_catalog(live.backend.context, live.app_id)
    return version


def test_edit_the_catalog_with_an_error_see_it_at_its_line_fix_and_apply(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[[Any, str], Path]
) -> None:
    before = _current_version(live)
    page = operator_page()
    page.goto(live.app_page("catalog"))
    page.get_by_role("heading", name="Catalog", exact=True).wait_for()
    assert page.locator("#entitlements").get_by_text("export_hd").is_visible()
    screenshot(page, "catalog")

    editor = page.get_by_label(re.compile("The catalog in YAML"))
    text = editor.input_value()
    lines = text.splitlines()
    broken_line = next(i for i, line in enumerate(lines) if line.strip() == "type: boolean") + 1
    editor.fill(text.replace("type: boolean", "type: bool", 1))
    page.get_by_role("button", name="Validate and apply").click()

    problems = page.locator("#catalog-problems li")
    problems.first.wait_for()
    assert problems.count() == 1
    assert problems.first.inner_text().startswith(f"Line {broken_line}, column")
    assert "must be one of metered, boolean" in problems.first.inner_text()
    marked = page.locator(".problem-line")
    assert marked.count() == 1
    assert marked.first.get_attribute("id") == f"line-{broken_line}"
    assert marked.first.inner_text().strip() == "type: bool"
    # The text keeps the edit, and nothing was applied.
    assert "type: bool\n" in editor.input_value()
    assert _current_version(live) == before
    screenshot(page, "catalog-error")

    fixed = text.replace("name: Pro\n", "name: Pro plus\n", 1)
    assert fixed != text
    editor.fill(fixed)
    page.get_by_role("button", name="Validate and apply").click()
    page.get_by_text(f"Applied as version {before + 1}.").wait_for()
    assert _current_version(live) == before + 1
    assert page.locator("#products").get_by_text("Pro plus").is_visible()
    current = page.locator("#versions-table tbody tr").first
    assert current.get_by_text(str(before + 1)).first.is_visible()
    assert current.get_by_text("current").is_visible()

    page.get_by_role("button", name="Show the differences").click()
    page.wait_for_url(re.compile(rf".*/catalog/diff\?old={before}&new={before + 1}"))
    removed = page.locator("#catalog-diff .diff-removed")
    added = page.locator("#catalog-diff .diff-added")
    assert [t.strip() for t in removed.all_inner_texts()] == ["-  name: Pro"]
    assert [t.strip() for t in added.all_inner_texts()] == ["+  name: Pro plus"]
    screenshot(page, "catalog-diff")


def test_catalog_names_with_markup_render_as_text(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[[Any, str], Path]
) -> None:
    ctx = live.backend.context
    _, catalog = catalog_service.get_catalog(ctx, live.app_id)
    text = catalog_to_yaml(catalog)
    # JSON strings are YAML's double-quoted strings.
    text = text.replace("name: HD export", f"name: {json.dumps(HOSTILE_NAME)}", 1)
    text = text.replace("name: Welcome bonus", f"name: {json.dumps(HOSTILE_PRODUCT)}", 1)
    catalog_service.apply_catalog(ctx, live.app_id, revenipe.load_catalog(text))

    page = operator_page()
    dialogs = _no_dialogs(page)
    page.goto(live.app_page("catalog"))
    page.locator("#entitlements").get_by_text(HOSTILE_NAME, exact=True).wait_for()
    assert page.locator("#products").get_by_text(HOSTILE_PRODUCT, exact=True).is_visible()
    assert HOSTILE_NAME in page.get_by_label(re.compile("The catalog in YAML")).input_value()
    page.goto(live.app_page("analytics"))
    page.get_by_role("heading", name="Usage analytics").wait_for()
    page.goto(live.app_page("catalog/diff"))
    page.locator("#catalog-diff").wait_for()
    assert HOSTILE_NAME in page.locator("#catalog-diff").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []
    screenshot(page, "catalog-hostile-diff")


def test_overview_and_analytics_show_tracks(
    live: Live, operator_page: Callable[[], Any], screenshot: Callable[[Any, str], Path]
) -> None:
    api = live.api()
    values = {"chart-alice": [3, 4], "chart-bob": [5], "chart-carol": [1, 1, 1]}
    for customer, tracked in values.items():
        for value in tracked:
            response = api.post(
                f"/v1/customers/{customer}/track", json={"id": "credits", "value": value}
            )
            assert response.status_code == 200 and response.json()["success"], response.text
    refused = api.post("/v1/customers/chart-bob/track", json={"id": "credits", "value": 10**6})
    assert refused.status_code == 200 and refused.json()["success"] is False
    # The server's worker folds every second (PostgreSQL: behind a 5 s clock margin);
    # folding here, on one machine with no margin, is the same fold and needs no wait.
    rollups.fold_all(live.backend.context, margin=timedelta(0))
    rollups.count_sources(live.backend.context)

    page = operator_page()
    page.goto(live.app_page(""))
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.locator("#tile-tracks").inner_text() == "7"
    assert page.locator("#tile-refused").inner_text() == "1"
    row = page.locator("#top-keys tbody tr").first
    assert row.locator("td").first.inner_text() == "credits"
    assert row.locator("td").nth(3).inner_text() == "15"
    assert page.locator("figure svg rect.bar").count() >= 2
    screenshot(page, "overview")

    row.get_by_role("link", name="credits").click()
    page.get_by_role("heading", name="Usage analytics").wait_for()
    assert page.locator("#tile-consumed").inner_text() == "15"
    assert page.locator("#tile-refused").inner_text() == "1"
    first = page.locator("#top-customers tbody tr").first
    assert first.locator("td").first.inner_text() == "chart-alice"
    assert first.locator("td").nth(2).inner_text() == "7"
    page.get_by_label("Range").select_option("24h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*range=24h.*"))
    assert page.locator("#tile-consumed").inner_text() == "15"
    screenshot(page, "analytics")
