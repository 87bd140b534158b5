"""The dashboard benchmark's code path on a tiny database (so that it cannot rot): build,
reuse from the cache, sign in, request every page, render the table."""

from __future__ import annotations

from pathlib import Path

from revenipe.bench import dashboard


def test_the_dashboard_bench_builds_reuses_and_times_every_page(tmp_path: Path) -> None:
    said: list[str] = []
    built = dashboard.cached_sqlite(tmp_path, 40, said.append)
    assert not built.reused
    assert built.rows["customers"] == 40
    # Each bulk customer has two ledger entries; the measured ones have a history too.
    assert built.rows["ledger_entries"] >= 80
    again = dashboard.cached_sqlite(tmp_path, 40, said.append)
    assert again.reused and again.app_id == built.app_id
    assert any("reusing" in line for line in said)

    figures = dashboard.measure(again, 2, said.append)
    assert [f.name for f in figures] == [name for name, _ in dashboard.page_paths("a", "c", "x")]
    for page in figures:
        assert page.status == 200, page
        assert len(page.times_ms) == 2 and all(t > 0 for t in page.times_ms)
    table = dashboard.render(figures, "tiny")
    assert table.count("PASS") + table.count("FAIL") == len(figures)
