"""YAML text for an editor: where each problem of a catalog is in the text it came
from, and a catalog written back as YAML.

`load_catalog` validates the decoded document, whose problems name fields by path
(``products[0].grants[1].amount``); here the text is composed again into PyYAML's nodes,
which keep their positions, and each path is walked down them to a line and column.
Nothing here decides what is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import yaml

from revenipe.catalog.fields import CatalogProblem
from revenipe.catalog.model import Catalog

DOCUMENT_PATH = "<document>"
"""The path of problems with the document as a whole (YAML syntax, wrong top-level type)."""
FILE_PATH = "<file>"
"""The path of problems reading a catalog file."""


def locate_problems(
    text: str, problems: Sequence[CatalogProblem], loader: type[yaml.SafeLoader]
) -> list[CatalogProblem]:
    """The problems with the line and column of the node their path names (or of its
    nearest ancestor that exists); unchanged if the text cannot be composed again."""
    try:
        root = yaml.compose(text, Loader=loader)
    except (yaml.YAMLError, RecursionError):
        return list(problems)
    if root is None:
        return list(problems)
    located = []
    for problem in problems:
        mark = _mark_of(root, problem.path)
        if mark is None:
            located.append(problem)
        else:
            located.append(replace(problem, line=mark.line + 1, column=mark.column + 1))
    return located


def _mark_of(root: yaml.Node, path: str) -> yaml.Mark | None:
    """Walk `path` (``products[0].grants[1].amount``) down the composed nodes; the mark
    of the deepest node reached."""
    if path in (DOCUMENT_PATH, FILE_PATH, ""):
        return None
    node: yaml.Node = root
    mark: yaml.Mark = root.start_mark
    rest = path
    while rest:
        rest = rest.removeprefix(".")
        step = _index_step(node, rest) if rest.startswith("[") else _key_step(node, rest)
        if step is None:
            return mark
        node, mark, rest = step
    return mark


def _index_step(node: yaml.Node, rest: str) -> tuple[yaml.Node, yaml.Mark, str] | None:
    end = rest.find("]")
    if end < 0 or not isinstance(node, yaml.SequenceNode) or not rest[1:end].isdigit():
        return None
    index = int(rest[1:end])
    if index >= len(node.value):
        return None
    item: yaml.Node = node.value[index]
    return item, item.start_mark, rest[end + 1 :]


def _key_step(node: yaml.Node, rest: str) -> tuple[yaml.Node, yaml.Mark, str] | None:
    """Keys may hold dots (priced action ids): the longest key the path goes on with."""
    if not isinstance(node, yaml.MappingNode):
        return None
    found: tuple[str, yaml.Node, yaml.Node] | None = None
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or not rest.startswith(key):
            continue
        if len(rest) > len(key) and rest[len(key)] not in ".[":
            continue
        if found is None or len(key) > len(found[0]):
            found = (key, key_node, value_node)
    if found is None:
        return None
    key, key_node, value_node = found
    # A scalar's problem is its value; a mapping's or a list's, its key's line.
    scalar = isinstance(value_node, yaml.ScalarNode)
    return value_node, value_node.start_mark if scalar else key_node.start_mark, rest[len(key) :]


def catalog_to_yaml(catalog: Catalog) -> str:
    """The catalog as YAML in its canonical field order (`load_catalog` reads it back
    as the same catalog). Comments and formatting of the text it came from are not
    kept: versions are stored in canonical form."""
    document = catalog.to_document()
    text: str = yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return text
