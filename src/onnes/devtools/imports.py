"""The package's layer order, and a check that no module imports upward or in a circle.

Each module belongs to a layer (the longest matching prefix in ``LAYERS``). A module may
import from its own layer or any lower one; imports inside functions count too, since a
lazy import is still a dependency. A circle among modules (at any depth) is an error
even inside one layer.

    python -m onnes.devtools.imports        # prints the violations; exit status 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "onnes"
ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module's layer is that of the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    # errors, the element range, atomic file writes, the data catalogue: import nothing of the package
    ("onnes", "onnes.errors", "onnes.elements", "onnes.io", "onnes.catalogue"),
    # the crystal-table contract; the links between models and the data sets' roles, the
    # entries a campaign's later rounds add
    ("onnes.crystals", "onnes.rounds", "onnes.graph"),
    # structure matching, the generative models, the interatomic potentials
    ("onnes.matching", "onnes.models", "onnes.mlip"),
    # configuration: validates against the registries below it
    ("onnes.config",),
    # stages on the config: data, training, screening, baselines, each job's settings
    ("onnes.data", "onnes.train", "onnes.screen", "onnes.baselines", "onnes.stage_settings"),
    # stages on those: sampling a checkpoint, superconductivity
    ("onnes.sampling", "onnes.tc"),
    # DFT verification and the campaign page
    ("onnes.dft", "onnes.report"),
    # entry points
    ("onnes.cli", "onnes.devtools"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    if layer is None:
        raise KeyError(f"module {module} has no layer in onnes.devtools.imports.LAYERS")
    return layer


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from a import b`` counts as a.b when b
    is a module, else as a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {m: imports_of(p, modules) - {m} for m, p in paths.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                problems.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def main() -> int:
    graph = import_graph()
    problems = upward_imports(graph) + [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(graph)} modules in {len(LAYERS)} layers: no upward import, no circle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
