"""No `assert` statement in the package: `python -O` strips them, so an invariant checked
by one is not checked at all in an optimized run. A broken invariant raises
`InvariantViolation` (revenipe.engine.errors) instead; tests keep their asserts."""

from __future__ import annotations

import ast
from pathlib import Path

import revenipe

PACKAGE = Path(revenipe.__file__).parent


def bare_asserts(root: Path) -> list[str]:
    """Each `assert` statement under `root`, as `path:line: source`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Assert):
                where = path.relative_to(root.parent)
                found.append(f"{where}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_the_package_has_no_assert_statement() -> None:
    found = bare_asserts(PACKAGE)
    assert not found, "raise InvariantViolation instead of:\n" + "\n".join(found)


def test_an_assert_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "ok.py").write_text("def f(x):\n    if x is None:\n        raise ValueError\n")
    (package / "sub" / "bad.py").write_text("def g(x):\n    y = x\n    assert y is not None\n")
    assert bare_asserts(package) == ["pkg/sub/bad.py:3: assert y is not None"]
