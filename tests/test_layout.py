"""The folder layout is the architecture: check the dependency directions of DESIGN §1 on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"hubtune", "server", "worker", "plugin", "migrations"}

# package -> top-level packages of ours it must never import
FORBIDDEN = {
    "hubtune": {"server", "worker", "plugin"},
    "plugin": {"hubtune", "server", "worker"},
    "server": {"worker"},
    "worker": {"server"},
}
HEAVY = {"torch", "transformers", "peft", "accelerate"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        # The CLI is the one edge module allowed to start every component.
        if package == "hubtune" and "cli" in path.relative_to(ROOT / package).parts:
            continue
        yield path


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package]) for p in _sources(package)}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("package", ["hubtune", "server", "plugin"])
def test_no_training_stack_outside_the_worker(package):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & HEAVY) for p in _sources(package)}
    assert {k: v for k, v in bad.items() if v} == {}
