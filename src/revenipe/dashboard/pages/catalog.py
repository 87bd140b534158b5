"""Catalog: the current version's entitlements, usage keys and products as tables; the
YAML edited in the browser and applied as a new version (through the service the API's
catalog route calls), problems shown at their line; the version history and a diff of
any two versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from revenipe.catalog import Catalog, CatalogError, catalog_to_yaml
from revenipe.catalog.fields import CatalogProblem
from revenipe.dashboard import auth
from revenipe.dashboard.page import Page, app_page, show
from revenipe.engine.errors import RevenipeError
from revenipe.services import catalogs as catalog_service
from revenipe.services.context import ServiceContext

Field = Annotated[str, Form()]
VERSIONS_PAGE = 20
MAX_DOCUMENT_CHARS = 512_000
"""A catalog edited in the browser: far above any real catalog, far below a problem."""
CONTEXT_LINES = 2
"""Lines shown around each problem's line in the listing."""


@dataclass(frozen=True, slots=True)
class ListedLine:
    number: int
    text: str
    problem: bool


@dataclass(frozen=True, slots=True)
class Editor:
    """What the editor shows: the text, and after a refused apply, why."""

    text: str
    base_version: int
    problems: list[CatalogProblem]
    listing: list[list[ListedLine]]
    """Excerpts of the text around each problem's line (one list per excerpt)."""
    error: str | None = None


def _listing(text: str, problems: list[CatalogProblem]) -> list[list[ListedLine]]:
    lines = text.splitlines()
    marked = {p.line for p in problems if p.line is not None}
    shown = sorted(
        {
            n
            for line in marked
            for n in range(line - CONTEXT_LINES, line + CONTEXT_LINES + 1)
            if 1 <= n <= max(len(lines), 1)
        }
    )
    excerpts: list[list[ListedLine]] = []
    for n in shown:
        listed = ListedLine(n, lines[n - 1] if n <= len(lines) else "", n in marked)
        if excerpts and excerpts[-1][-1].number == n - 1:
            excerpts[-1].append(listed)
        else:
            excerpts.append([listed])
    return excerpts


def _catalog_page(
    ctx: ServiceContext,
    page: Page,
    app_id: str,
    editor: Editor | None,
    before: int | None,
    *,
    status: int = 200,
) -> Response:
    version, catalog = catalog_service.get_catalog(ctx, app_id)
    if editor is None:
        text = catalog_to_yaml(catalog) if version else ""
        editor = Editor(text, version, [], [])
    versions = catalog_service.list_catalog_versions(
        ctx, app_id, before=before, limit=VERSIONS_PAGE + 1
    )
    more = len(versions) > VERSIONS_PAGE
    versions = versions[:VERSIONS_PAGE]
    return show(
        "catalog.html",
        page,
        status=status,
        version=version,
        catalog=catalog,
        editor=editor,
        versions=versions,
        next_before=versions[-1].version if more else None,
        paged=before is not None,
        grants=_grant_summaries(catalog),
        max_chars=MAX_DOCUMENT_CHARS,
    )


def _grant_summaries(catalog: Catalog) -> dict[str, list[str]]:
    """Each product's grants in a phrase: `monthly_credits: 100, reset period`."""
    summaries: dict[str, list[str]] = {}
    for product in catalog.products:
        phrases = []
        for grant in product.grants:
            parts = [grant.entitlement_id]
            if grant.amount is not None:
                parts[0] += f": {grant.amount:,}"
            if grant.reset.value != "never":
                parts.append(f"reset {grant.reset.value}")
            if grant.expires_after is not None:
                parts.append(f"expires after {grant.expires_after.isoformat()}")
            if grant.priority:
                parts.append(f"priority {grant.priority}")
            phrases.append(", ".join(parts))
        summaries[product.id] = phrases
    return summaries


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/apps/{app_id}/catalog")
    def catalog(request: Request, app_id: str, before: int | None = None) -> Response:
        page = app_page(ctx, request, app_id, section="catalog", title="Catalog")
        return _catalog_page(ctx, page, app_id, None, before)

    @router.post("/apps/{app_id}/catalog")
    def apply(
        request: Request,
        app_id: str,
        document: Field = "",
        base_version: Field = "",
        csrf_token: Field = "",
    ) -> Response:
        auth.require_csrf(ctx, request, csrf_token)
        page = app_page(ctx, request, app_id, section="catalog", title="Catalog")
        text = document.replace("\r\n", "\n")
        base = int(base_version) if base_version.strip().isdigit() else -1
        current, _ = catalog_service.get_catalog(ctx, app_id)

        def refused(problems: list[CatalogProblem], error: str | None) -> Response:
            editor = Editor(text, base, problems, _listing(text, problems), error)
            return _catalog_page(ctx, page, app_id, editor, None, status=400)

        if len(text) > MAX_DOCUMENT_CHARS:
            return refused([], f"The catalog is longer than {MAX_DOCUMENT_CHARS:,} characters.")
        if base != current:
            return refused(
                [],
                f"Version {current} was applied after you opened the editor (you edited "
                f"version {base}); nothing was applied. Compare them in the history below, "
                "then reload the page to edit the current version.",
            )
        try:
            applied = catalog_service.apply_catalog_text(ctx, app_id, text)
        except CatalogError as error:
            return refused(error.problems, None)
        except RevenipeError as error:
            return refused([], error.message)
        if not applied.changed:
            message = f"Nothing changed: this is version {applied.version} already."
        else:
            message = f"Applied as version {applied.version}."
        return auth.redirect(page.url("catalog"), flash=message)

    @router.get("/apps/{app_id}/catalog/diff")
    def diff(request: Request, app_id: str, old: int = 0, new: int = 0) -> Response:
        page = app_page(ctx, request, app_id, section="catalog", title="Catalog versions")
        current, _ = catalog_service.get_catalog(ctx, app_id)
        new = new or current
        old = old if old or new <= 1 else new - 1
        lines = catalog_service.diff_catalog_versions(ctx, app_id, old, new)
        return show("catalog_diff.html", page, old=old, new=new, current=current, lines=lines)

    return router
