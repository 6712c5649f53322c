"""The package's imports point one way: facade -> invocation -> actors -> http/providers/store
-> config/tokens -> types/errors -> runtime, with no cycles, and production never imports the
test kit.

Every import counts, including those made only for type checking and those made lazily inside
functions: a dependency is a dependency, whenever it is loaded.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path
from typing import Final

import pytest

import llm_invocation

PACKAGE: Final = Path(llm_invocation.__file__).parent

# Higher layers may import lower ones (a larger rank), never the reverse. Units of one rank
# do not import each other.
RANKS: Final = {
    "__main__": 0,
    "__init__": 1,
    "cli": 1,
    "client": 2,
    "invocation": 3,
    "actors.websocket": 4,
    "actors.mcp": 4,
    "actors": 5,
    "http": 6,
    "observability": 6,
    "providers": 7,
    "store": 7,
    "pricing": 7,
    "tools": 7,
    "config": 8,
    "tokens": 8,
    "types": 9,
    "errors": 10,
    "_ids": 11,
    "_secrets": 11,
    "_version": 11,
    "runtime": 12,
}
# The test kit sits on top of the mock provider; nothing in production imports it.
TEST_KIT: Final = "testing"
TEST_KIT_MAY_IMPORT: Final = {"providers", "types", "errors", "_secrets", "_version"}


def _unit(module: str) -> str:
    """The architectural unit of a dotted module name inside the package."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if parts[1] == "actors" and len(parts) > 2 and parts[2] in ("mcp", "websocket"):
        return f"actors.{parts[2]}"
    return parts[1]


def _module_name(path: Path) -> tuple[str, bool]:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _imports(path: Path) -> set[str]:
    """Every llm_invocation module ``path`` imports, resolved to absolute names."""
    module, is_package = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llm_invocation"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("llm_invocation"):
                continue
            found.add(target)
            if target == "llm_invocation" or node.module is None:
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


@functools.cache
def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(_module_name(path)[0])
        for target in _imports(path):
            unit = _unit(target)
            if unit not in (source, "__init__"):
                edges[source].add(unit)
    return edges


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {_unit(_module_name(path)[0]) for path in PACKAGE.rglob("*.py")}
    assert units - {TEST_KIT} <= set(RANKS)


@pytest.mark.parametrize("unit", sorted(RANKS))
def test_imports_point_down_the_layers(unit: str) -> None:
    upward = {
        target
        for target in _edges().get(unit, set())
        if target == TEST_KIT or RANKS[target] <= RANKS[unit]
    }
    assert not upward, f"{unit} imports {sorted(upward)} (same or higher layer, or the test kit)"


def test_the_test_kit_builds_on_the_providers_only() -> None:
    assert _edges()[TEST_KIT] <= TEST_KIT_MAY_IMPORT


def test_the_unit_graph_has_no_cycles() -> None:
    edges = _edges()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])


def test_the_runtime_knows_nothing_of_the_rest() -> None:
    assert not _edges().get("runtime")
