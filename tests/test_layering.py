"""The package's import graph: no cycle between top-level subpackages, and layers import only downward.

The layer order is read from the first lines of docs/architecture.md (``cli -> study -> ... -> io``), so the
document and this test cannot drift apart. Every import counts, module-level and inside functions.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deltaspace"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
ROOT = "deltaspace"  # the public face (lazy re-exports): above everything, imported by nothing inside


def documented_layers() -> list[set[str]]:
    """``cli -> study -> a / b -> ...`` from the doc's opening paragraph, highest layer first."""
    head = " ".join(ARCHITECTURE.read_text().split("\n\n")[1].split())
    match = re.search(r"`([a-z_ /]+(?:-> [a-z_ /]+)+)`", head)
    assert match, "docs/architecture.md must open with the layer order, e.g. `cli -> study -> ... -> io`"
    return [{name.strip() for name in layer.split("/")} for layer in match.group(1).split("->")]


def _top(module: str) -> str:
    """``deltaspace.train.sweep`` -> ``train``; a module of the package root -> ROOT."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
        return parts[1]
    return ROOT


def _imported(tree: ast.Module, package: str) -> set[str]:
    """Every deltaspace module ``tree`` imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if base == ROOT:  # `from deltaspace import attention` names a subpackage, if there is one
                found.update(f"{ROOT}.{alias.name}" for alias in node.names)
            else:
                found.add(base)
    return {name for name in found if name == ROOT or name.startswith(ROOT + ".")}


def package_edges() -> dict[str, dict[str, list[str]]]:
    """{importer's top-level name: {imported top-level name: [files]}}, within-package imports dropped."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if module == ROOT:
            continue  # the public face re-exports from every layer by design
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        source = _top(module)
        for target in _imported(ast.parse(path.read_text(), str(path)), package):
            target_top = _top(target) if target != ROOT else ROOT
            if target_top != source:
                edges[source][target_top].append(str(path.relative_to(PACKAGE.parent)))
    return edges


def _cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in edges.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_subpackages():
    edges = package_edges()
    cycles = _cycles(edges)
    detail = [
        f"{a} -> {b} ({edges[a][b][0]})"
        for cycle in cycles
        for a in cycle
        for b in cycle
        if b in edges.get(a, {})
    ]
    assert not cycles, f"import cycles {cycles}: " + "; ".join(detail)


def test_layers_import_only_downward():
    layers = documented_layers()
    rank = {name: depth for depth, layer in enumerate(layers) for name in layer}
    edges = package_edges()
    undocumented = sorted(
        {n for n in edges if n not in rank} | {t for e in edges.values() for t in e} - set(rank)
    )
    assert not undocumented, (
        f"{undocumented} import or are imported but are not in docs/architecture.md's layers"
    )
    upward = [
        f"{source} -> {target} ({files[0]})"
        for source, targets in edges.items()
        for target, files in targets.items()
        if rank[target] < rank[source]
    ]
    assert not upward, "lower layers import higher ones: " + "; ".join(upward)


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The helpers themselves: a made-up graph with a cycle and an upward edge is caught."""
    edges = {"train": {"report": ["a"]}, "report": {"train": ["b"]}, "io": {"cli": ["c"]}}
    assert _cycles(edges) == [["report", "train"]]
    layers = documented_layers()
    rank = {name: depth for depth, layer in enumerate(layers) for name in layer}
    assert rank["io"] > rank["cli"]  # so io -> cli would be reported as upward
    assert _top("deltaspace.train.sweep") == "train" and _top("deltaspace.io") == "io"
    tree = ast.parse("def f():\n    from deltaspace.report.results_table import x\n    from . import sweep\n")
    assert _imported(tree, "deltaspace.train") == {"deltaspace.report.results_table", "deltaspace.train"}
