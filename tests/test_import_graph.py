"""The library's import graph: dependencies flow one way, with no cycles and no imports hidden in functions.

Layers: infrastructure (runtime, cache, corpus, lm, hooks, weight_sparsity, explorer, progress, exercises,
workshop) -> lesson packages (lens, toy,
circuits, sae) -> autointerp (which reads the course's default SAE) -> capstone (notebook 05). Edges are computed from the source
with ``ast``: ``from course_lib.x import y`` is an edge to ``course_lib.x.y`` when that is a module, else
to ``course_lib.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import course_lib

ROOT = Path(course_lib.__file__).resolve().parent
INFRASTRUCTURE = {"runtime", "cache", "corpus", "lm", "hooks", "weight_sparsity", "explorer", "progress", "exercises",
                  "workshop"}
LESSONS = {"lens", "toy", "circuits", "sae"}
RUNNER = {"cli"}  # the notebook runner: imports what it runs, nothing imports it


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _target(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at module level, [(line, module)] imported inside functions)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [_target(a.name) for a in node.names if a.name.startswith("course_lib")]
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_lib"):
            return [_target(f"{node.module}.{a.name}") for a in node.names]
        return []

    in_functions: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if id(node) not in in_functions:
                    in_functions.add(id(node))
                    nested += [(node.lineno, n) for n in names(node)]
    for node in ast.walk(tree):
        if id(node) not in in_functions:
            top.update(names(node))
    return top, nested


GRAPH = {m: _imports(p)[0] - {m} for m, p in MODULES.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "course_lib"


def test_graph_is_not_empty():
    assert "course_lib.sae.training" in GRAPH and "course_lib.sae.model" in GRAPH["course_lib.sae.training"]


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_no_function_level_imports_of_the_library():
    found = [f"{m}:{line} imports {n}" for m, p in MODULES.items() if _group(m) not in RUNNER
             for line, n in _imports(p)[1]]
    assert not found, "import at module level (a function-level import hides a dependency):\n" + "\n".join(found)


def test_dependencies_flow_one_way():
    allowed = {g: INFRASTRUCTURE for g in INFRASTRUCTURE} | {g: INFRASTRUCTURE for g in LESSONS}
    allowed["autointerp"] = INFRASTRUCTURE | {"sae"}  # the course's default SAE, and nothing else of sae
    allowed["capstone"] = INFRASTRUCTURE | LESSONS | {"autointerp"}  # notebook 05 reads every lesson before it
    bad = []
    for m, deps in GRAPH.items():
        g = _group(m)
        for d in deps:
            h = _group(d)
            if h == g or h == "course_lib" or g in RUNNER:
                continue
            if h in RUNNER or h not in allowed.get(g, INFRASTRUCTURE | LESSONS):
                bad.append(f"{m} imports {d}")
            elif g == "autointerp" and h == "sae" and d not in ("course_lib.sae.default", "course_lib.sae.model"):
                bad.append(f"{m} imports {d}: autointerp reads only the default SAE")
    assert not bad, "\n".join(bad)


def test_each_lesson_package_exposes_its_modules():
    """``from course_lib import sae`` then ``sae.widgets...``: every module of a lesson package is an attribute."""
    import importlib

    for name in sorted(LESSONS):
        pkg = importlib.import_module(f"course_lib.{name}")
        modules = {p.stem for p in (ROOT / name).glob("*.py") if p.stem != "__init__"}
        missing = sorted(m for m in modules if not hasattr(pkg, m))
        assert not missing, f"course_lib.{name} does not import {missing} in its __init__"
