"""No import circles among the project's modules, deferred (in-function) imports included.

A deferred import hides a circle from Python's import machinery but not from a reader: the two
modules still cannot be understood, tested or moved apart. Counted as dependencies: every import
statement, at module level or inside a function. Not counted: the body of a module-level PEP 562
``__getattr__`` (a forward kept for old callers) and the deferred public forwards of the package
façade ``edge_sdk/__init__.py``; so that the façade cannot hide a dependency, project modules may
not reach through it (``import edge_sdk`` then ``edge_sdk.load``).
"""

from __future__ import annotations

import ast

FACADE = "edge_sdk"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
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
            child = next(children, None)
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
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_circle():
    # The checker itself: a three-module circle and a self-contained tail.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles(project):
    graph: dict[str, set[str]] = {name: set() for name in project.modules}
    where: dict[tuple[str, str], str] = {}
    for name, mod in project.modules.items():
        for target, line, _top in project.imports(mod):
            graph[name].add(target)
            where.setdefault((name, target), f"{mod.rel}:{line}")
    problems = []
    for comp in _cycles(graph):
        members = set(comp)
        edges = [f"{a} -> {b} ({where[(a, b)]})" for a in comp for b in sorted(graph[a] & members)]
        problems.append(f"circle among {', '.join(comp)}:\n    " + "\n    ".join(edges))
    assert not problems, "\n".join(problems)


def test_no_reaching_through_the_facade(project):
    """``import edge_sdk`` inside the project hides which module it uses; import that module."""
    bad = []
    for mod in project.modules.values():
        if mod.name == FACADE:
            continue
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import) and any(a.name == FACADE and a.asname is None for a in node.names):
                bad.append(f"{mod.rel}:{node.lineno}")
    assert not bad, f"import the module you use instead of the package façade: {', '.join(bad)}"
