"""The catalog editor's services: apply YAML text as a new version, list versions, and
diff two of them, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import revenipe
from revenipe.catalog import CatalogError, catalog_to_yaml
from revenipe.engine.errors import RevenipeError
from revenipe.services import catalogs


def test_apply_text_lists_versions_and_diffs_them(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    ctx = backend.context
    v1 = catalogs.catalog_version_yaml(ctx, app.app_id, 1)
    assert v1 == catalog_to_yaml(app.catalog())
    edited = v1.replace("name: Pro\n", "name: Pro plus\n").replace("amount: 1000", "amount: 1200")
    applied = catalogs.apply_catalog_text(ctx, app.app_id, edited)
    assert (applied.version, applied.changed) == (2, True)
    # The same text again changes nothing.
    assert catalogs.apply_catalog_text(ctx, app.app_id, edited).changed is False
    assert [v.version for v in catalogs.list_catalog_versions(ctx, app.app_id)] == [2, 1]
    assert [v.version for v in catalogs.list_catalog_versions(ctx, app.app_id, before=2)] == [1]

    diff = catalogs.diff_catalog_versions(ctx, app.app_id, 1, 2)
    assert [d.text for d in diff[:2]] == ["--- version 1", "+++ version 2"]
    assert {d.kind for d in diff[:2]} == {"header"}
    changed = [
        (d.kind, d.text[0], d.text[1:].strip()) for d in diff if d.kind in ("added", "removed")
    ]
    assert changed == [
        ("removed", "-", "name: Pro"),
        ("added", "+", "name: Pro plus"),
        ("removed", "-", "amount: 1000"),
        ("added", "+", "amount: 1200"),
    ]
    assert any(d.kind == "hunk" for d in diff)
    assert catalogs.diff_catalog_versions(ctx, app.app_id, 2, 2) == []


def test_an_invalid_text_is_refused_with_lines_and_nothing_applied(
    backend: revenipe.Backend, app: revenipe.App
) -> None:
    ctx = backend.context
    text = catalogs.catalog_version_yaml(ctx, app.app_id, 1).replace("type: boolean", "type: bool")
    with pytest.raises(CatalogError) as info:
        catalogs.apply_catalog_text(ctx, app.app_id, text)
    (problem,) = info.value.problems
    assert problem.line is not None
    assert text.splitlines()[problem.line - 1].strip() == "type: bool"
    assert [v.version for v in catalogs.list_catalog_versions(ctx, app.app_id)] == [1]
    with pytest.raises(RevenipeError):
        catalogs.catalog_version_yaml(ctx, app.app_id, 7)
