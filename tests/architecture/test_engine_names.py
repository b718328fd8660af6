"""Runtime and format names are spelled only where they are owned (issue 15).

A string equal to a registered runtime's name may appear only in that runtime's adapter module;
a format's name only in its descriptor (with its aliases), the converter the descriptor names,
and the adapters of the runtimes that open it. Everywhere else code asks the registries
(``edge_sdk.runtimes.registry``, ``edge_sdk.formats.registry``), so adding an engine or a format
touches no other file. Board profiles, tests and docs are not code and may name anything;
docstrings are prose. Names inside longer strings (help texts, messages) are prose too.
"""

from __future__ import annotations

import ast
from importlib.metadata import entry_points

from edge_sdk.formats.registry import get_format
from edge_sdk.runtimes.registry import get_runtime

# (file, name): why that file may spell the name although it owns neither.
EXEMPT = {
    ("edge_sdk/serve/triton.py", "onnxruntime"): "Triton's backend name in its config.pbtxt vocabulary",
    ("edge_sdk/serve/triton.py", "openvino"): "Triton's backend name in its config.pbtxt vocabulary",
    ("edge_sdk/serve/triton.py", "onnx"): "the format Triton's onnxruntime backend reads",
    # The CLI must not import edge_sdk.serve (its web stack is an optional extra) to read BACKENDS.
    ("edge_sdk/cli/commands/export.py", "onnxruntime"): "Triton's backend names, as --backend choices",
    ("edge_sdk/cli/commands/export.py", "openvino"): "Triton's backend names, as --backend choices",
    ("converters/unsupported.py", "torch"): "the torch.* operator namespace in an exporter's message",
}


def _owners() -> dict[str, set[str]]:
    owners: dict[str, set[str]] = {}
    for ep in entry_points(group="edge_sdk.runtimes"):
        module = ep.value.partition(":")[0]
        owners.setdefault(ep.name, set()).add(module)
        for fmt in get_runtime(ep.name).formats:  # the formats an adapter opens are its own fact
            owners.setdefault(fmt, set()).add(module)
    for ep in entry_points(group="edge_sdk.formats"):
        spec = get_format(ep.name)
        descriptor = ep.value.partition(":")[0]
        for word in (spec.name, *spec.aliases):
            owners.setdefault(word, set()).add(descriptor)
        owners[spec.name].add(spec.converter.partition(":")[0])
    return owners


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _misplaced(project, owners: dict[str, set[str]]) -> list[str]:
    found = []
    for mod in project.modules.values():
        prose = _docstring_ids(mod.tree)
        for node in ast.walk(mod.tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
                continue
            word = node.value
            if word in owners and mod.name not in owners[word] and (mod.rel, word) not in EXEMPT:
                found.append(f"{mod.rel}:{node.lineno}: {word!r}")
    return found


def test_names_are_registered():
    owners = _owners()
    # The checker sees the built-in engines and formats (and so would catch them misplaced).
    assert {"onnxruntime", "openvino", "litert", "onnx", "tflite"} <= set(owners)
    assert owners["onnxruntime"] == {"edge_sdk.runtimes.onnxruntime"}


def test_no_runtime_or_format_name_outside_its_owner(project):
    found = _misplaced(project, _owners())
    assert not found, ("runtime/format names spelled outside their adapter or descriptor; ask "
                       "edge_sdk.runtimes.registry / edge_sdk.formats.registry instead:\n  " + "\n  ".join(found))


def test_checker_catches_a_table(project, tmp_path):
    # A planner-style table written back into a shared module is found.
    import copy
    from types import SimpleNamespace

    name = "edge_sdk.planning.planner"
    mod = copy.copy(project.modules[name])
    mod.tree = ast.parse(mod.path.read_text() + '\nRUNTIME_FORMATS = {"litert": ("tflite",)}\n')
    found = _misplaced(SimpleNamespace(modules={name: mod}), _owners())
    assert [f.split(": ")[1] for f in found] == ["'litert'", "'tflite'"]


def test_exemptions_are_still_needed(project):
    # An exemption that no longer matches anything is removed, not left to excuse a future table.
    used = set()
    for mod in project.modules.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Constant) and (mod.rel, node.value) in EXEMPT:
                used.add((mod.rel, node.value))
    assert used == set(EXEMPT)
