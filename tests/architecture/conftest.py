"""The project's own modules as the installed package names them, read with the stdlib ``ast``,
for the architecture tests (a fixture: test modules cannot import conftest under importlib mode)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
# Folders at the repository root and the package each installs as (pyproject's package-dir).
ROOTS = {"edge_sdk": "edge_sdk", "converters": "edge_sdk.converters", "runtimes": "edge_sdk.runtimes",
         "boards": "edge_sdk.boards"}
SKIP_PARTS = {"ansible_collections", "__pycache__"}  # Ansible's own Python, not edge-sdk modules
FACADE = "edge_sdk"  # the package root: re-exports the public API through deferred forwards


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module = field(repr=False)

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()


def project_modules() -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder)
            if SKIP_PARTS & set(rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            mods[name] = Module(name, path, is_package, ast.parse(path.read_text(), filename=str(path)))
    return mods


def _forward_nodes(mod: Module) -> set[int]:
    """ids of import nodes that are compatibility forwards, not dependencies: the body of a
    module-level PEP 562 ``__getattr__``, and the façade's deferred public forwards."""
    skip: set[int] = set()
    for node in mod.tree.body:
        if isinstance(node, ast.FunctionDef) and (node.name == "__getattr__" or mod.name == FACADE):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def imports(mod: Module, mods: dict[str, Module]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level?) for every import in ``mod``, deferred ones too."""
    skip = _forward_nodes(mod)
    top = {id(n) for stmt in mod.tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef))
           for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(mod.tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.module == "__future__":
                continue
            base = node.module or ""
            if node.level:
                pkg = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != mod.name:
                out.append((t, node.lineno, id(node) in top))
    return out


@pytest.fixture(scope="session")
def project() -> SimpleNamespace:
    mods = project_modules()
    return SimpleNamespace(modules=mods, imports=lambda m: imports(m, mods), repo=REPO)
