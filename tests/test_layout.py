"""The folder layout is the architecture: check the rules of DESIGN §1 on the source, with no exemption.

- the dependency directions between our top-level packages (`cli -> everything`; `server` and `worker`
  -> `hubtune`, `plugin`; `plugin` and `hubtune` -> none of ours), and that nothing imports `cli`;
- no product package imports the tests' harness, and bench/ and testkit/ import nothing from tests/;
- the training stack (torch, transformers, ...) is imported only inside worker/;
- no import cycle between the modules of a package (Tarjan's strongly connected components).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("hubtune", "cli", "server", "worker", "plugin", "migrations")
TEST_ONLY = {"tests", "testkit", "bench"}

# package -> top-level names it must never import. Only tests and testkit (the tests' harness, bench's
# too: it starts `python -m cli` and mirrors cli's worker layout) may import `cli`, the edge that starts
# everything: anything else importing it would pull every component in.
FORBIDDEN = {
    "hubtune": {"cli", "server", "worker", "plugin"} | TEST_ONLY,
    "plugin": {"cli", "hubtune", "server", "worker"} | TEST_ONLY,
    "server": {"cli", "worker"} | TEST_ONLY,
    "worker": {"cli", "server"} | TEST_ONLY,
    "migrations": {"cli", "server", "worker", "plugin"} | TEST_ONLY,
    "cli": TEST_ONLY,
    "testkit": {"tests", "bench"},
    "bench": {"tests", "cli"},
}
# The trackers (worker/tracking) too: the API process never imports mlflow, wandb or tensorboard.
HEAVY = {"torch", "transformers", "peft", "accelerate", "mlflow", "wandb", "tensorboard"}

# Cycles inside worker/engine are counted apart from the rest of worker/ (issue 16 removed its four).
CYCLE_SCOPES = (*PRODUCT, "worker/engine", "testkit")


def _sources(package: str):
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level names this file imports, anywhere in it (a lazy import inside a function counts too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package]) for p in _sources(package)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_nothing_imports_the_cli():
    """Only the tests and their harness may: everything else would pull every component in with it."""
    importers = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if p.relative_to(ROOT).parts[0] not in {"cli", "tests", "testkit", "venv", "build"}
                 and not p.relative_to(ROOT).parts[0].startswith(".")
                 and "cli" in _imports(p)]
    assert importers == []


@pytest.mark.parametrize("package", ["hubtune", "cli", "server", "plugin", "migrations"])
def test_no_training_stack_outside_the_worker(package):
    # cli imports torch only through worker/ in the process that runs a worker, never by itself.
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & HEAVY) for p in _sources(package)}
    assert {k: v for k, v in bad.items() if v} == {}


# --- import cycles ----------------------------------------------------------------------------------

def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (`a.b.func` -> `a.b`), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports, lazy imports included: a cycle closed only inside a
    function still ties the modules together (neither can be understood, tested or moved alone).
    `from pkg import x` is an edge to pkg.x where that is a module, else to pkg itself."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(_owner(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else _owner(base, modules))
    return found - {None, name}


def _import_graph(root: Path, packages) -> dict[str, list[str]]:
    modules = {_module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    return {name: sorted(_module_imports(name, path, modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(cycles)


def _scope(cycle: list[str]) -> str:
    """The narrowest CYCLE_SCOPES folder that holds every module of the cycle."""
    def inside(module: str, scope: str) -> bool:
        dotted = scope.replace("/", ".")
        return module == dotted or module.startswith(dotted + ".")
    return max((s for s in CYCLE_SCOPES if all(inside(m, s) for m in cycle)), key=len, default="(across packages)")


def test_the_cycle_finder_finds_cycles(tmp_path):
    """The check below can fail: relative, absolute and lazy imports all make edges."""
    sources = {"__init__.py": "", "a.py": "from pkg import b\n", "b.py": "def f():\n    from .a import g\n",
               "c.py": "import pkg.d.e\n", "d/__init__.py": "", "d/e.py": "from .. import c\n", "f.py": "import pkg.a\n"}
    for relative, text in sources.items():
        (tmp_path / "pkg" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / relative).write_text(text)
    graph = _import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == ["pkg.a"] and graph["pkg.f"] == ["pkg.a"] and graph["pkg.d.e"] == ["pkg.c"]
    assert _cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d.e"]]


@cache
def _our_cycles() -> list[list[str]]:
    return _cycles(_import_graph(ROOT, (*PRODUCT, "testkit")))


@pytest.mark.parametrize("scope", [*CYCLE_SCOPES, "(across packages)"])
def test_no_import_cycles(scope):
    assert [c for c in _our_cycles() if _scope(c) == scope] == []
