"""The packaging decision holds: converters/, runtimes/ and boards/ install under edge_sdk only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
MAPPED = {"edge_sdk.converters": "converters", "edge_sdk.runtimes": "runtimes", "edge_sdk.boards": "boards"}


def _package_dirs() -> set[str]:
    found = set()
    for root, pkg in [("edge_sdk", "edge_sdk"), *[(d, p) for p, d in MAPPED.items()]]:
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root).parts
            found.add(".".join((pkg, *rel)))
    return found


def test_pyproject_lists_every_package_folder():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(conf["packages"]) == _package_dirs()
    assert conf["package-dir"] == {"edge_sdk": "edge_sdk", **MAPPED}


def test_bare_top_level_names_are_never_imported():
    # Importing every module from the repository root must not create `converters`, `runtimes` or
    # `boards` modules: those names belong to other PyPI distributions.
    code = (
        "import importlib, pkgutil, sys, edge_sdk\n"
        "for m in ['edge_sdk.converters.convert', 'edge_sdk.runtimes.registry', 'edge_sdk.cli.main', 'edge_sdk.api']:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(n for n in ('converters', 'runtimes', 'boards') if n in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_device_side_has_no_module_level_torch_import():
    offenders = []
    for root in ("edge_sdk", "runtimes"):
        for py in (REPO / root).rglob("*.py"):
            if py.name == "torch_reference.py":
                continue
            tree = ast.parse(py.read_text())
            for node in tree.body:  # module level only: torch inside functions is host-only code
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "torch" or n.startswith("torch.") for n in names):
                    offenders.append(str(py.relative_to(REPO)))
    assert offenders == []


def test_no_source_file_imports_bare_names():
    bad = []
    for root in ("edge_sdk", "converters", "runtimes", "tests", "examples", "benchmarks"):
        for py in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
                if any(m.split(".")[0] in {"converters", "runtimes", "boards"} for m in mods):
                    bad.append(str(py.relative_to(REPO)))
    assert bad == []
