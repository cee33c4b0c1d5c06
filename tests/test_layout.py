"""The package's layout: imports point down the layers and form no cycle (docs/architecture.md).

Every ``from tagretrieval... import`` of the library, at module level or inside a function, is read with ``ast``
(nothing is imported), so a function-level import that runs upward is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tagretrieval"

# the layers, lowest first: a module may import its own layer and the ones below (docs/architecture.md)
LAYERS = {
    "runtime": 0,
    "audio": 1, "pretrained": 1, "tags": 1, "evaluation": 1, "viewer": 1,
    "data": 2,
    "models": 3,
    "training": 4,
    "inference": 5,
    "baselines": 6, "reports": 6,
    "tasks": 7, "__init__": 7,  # the package's lazy load_model sits above everything
}


def _layer(module: str) -> int:
    """The task layer is ``tasks.py`` and the modes' ``tasks``/``task`` modules of inference, baselines, reports."""
    if module.rsplit(".", 1)[-1] in ("tasks", "task"):
        return LAYERS["tasks"]
    package = module.split(".")[0]
    assert package in LAYERS, f"tagretrieval.{package} has no layer: add it to LAYERS and docs/architecture.md"
    return LAYERS[package]


def _modules() -> dict[str, set[str]]:
    imports = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tagretrieval."):
                target = node.module.removeprefix("tagretrieval.")
                subpackage = PACKAGE / target.replace(".", "/")
                if subpackage.is_dir():  # `from tagretrieval.audio import x`: x may be a module of the package
                    found |= {f"{target}.{a.name}" if (subpackage / f"{a.name}.py").exists() else target
                              for a in node.names}
                else:
                    found.add(target)
        imports[name] = found
    return imports


def test_no_module_at_the_top_level_but_the_entry_points():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "tasks.py"], loose


def test_every_import_points_down_the_layers():
    wrong = []
    for module, targets in _modules().items():
        for target in targets:
            here, there = _layer(module), _layer(target)
            if there > here:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycle_between_modules():
    graph = _modules()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle)
